"""Triton model `whisper_features`: validate a request, decode/resample audio, log-mel windows."""

import json

# Before numpy and whisper_triton: the bundled code, then PYTHONPATH, first on sys.path.
import _whisper_triton_paths  # noqa: F401
import numpy as np
import triton_python_backend_utils as pb_utils

import whisper_triton
from whisper_triton import contract
from whisper_triton.serving import RequestError, prepare


class TritonPythonModel:
    def initialize(self, args):
        # Which code this model runs: the copy bundled next to model.py (tests/test_deployment.py reads it).
        pb_utils.Logger.log_info(f"{args['model_name']}: whisper_triton from {whisper_triton.__path__[0]}")
        parameters = json.loads(args["model_config"])["parameters"]
        self.n_mels = int(parameters["n_mels"]["string_value"])
        self.max_seconds = float(parameters["max_audio_seconds"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                features, windows, options = prepare(
                    _input(request, contract.AUDIO),
                    _input(request, contract.AUDIO_BYTES),
                    _input(request, contract.OPTIONS),
                    self.max_seconds,
                    self.n_mels,
                )
            except RequestError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(contract.INPUT_FEATURES, features[None]),
                        pb_utils.Tensor(contract.WINDOWS, windows[None]),
                        pb_utils.Tensor(
                            contract.DECODE_OPTIONS, np.array([[options.encode()]], dtype=object)
                        ),
                    ]
                )
            )
        return responses


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
