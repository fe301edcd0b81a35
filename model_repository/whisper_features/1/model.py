"""Triton model `whisper_features`: validate a request, decode/resample audio, find speech, log-mel windows.

Everything a client can get wrong is answered here, before any model runs, with Triton's INVALID_ARG
(HTTP 400): a client mistake is never reported as a server fault.
"""

import json
import pathlib

# Before numpy and whisper_triton: the bundled code, then PYTHONPATH, first on sys.path.
import _whisper_triton_paths  # noqa: F401
import numpy as np
import triton_python_backend_utils as pb_utils

import whisper_triton
from whisper_triton import contract
from whisper_triton.manifest import TOKENIZER_FILE, ModelManifest
from whisper_triton.native import return_large_blocks_at_once
from whisper_triton.serving import FeatureStage, Limits, error_response
from whisper_triton.tokenizer import TextTokenizer
from whisper_triton.vad import MODEL_FILE as VAD_FILE
from whisper_triton.vad import SileroVad

MODEL = contract.FEATURES_MODEL


class TritonPythonModel:
    def initialize(self, args):
        # Which code this model runs: the copy bundled next to model.py (tests/test_deployment.py reads it).
        pb_utils.Logger.log_info(f"{args['model_name']}: whisper_triton from {whisper_triton.__path__[0]}")
        return_large_blocks_at_once()
        parameters = json.loads(args["model_config"])["parameters"]
        directory = pathlib.Path(__file__).parent
        limits = Limits(
            max_seconds=float(parameters["max_audio_seconds"]["string_value"]),
            max_bytes=int(parameters["max_audio_bytes"]["string_value"]),
        )
        vad = SileroVad(directory / VAD_FILE) if (directory / VAD_FILE).is_file() else None
        tokenizer = TextTokenizer(directory / TOKENIZER_FILE)
        self.stage = FeatureStage(ModelManifest.load(directory), tokenizer, vad, limits)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                features, windows, options = self.stage.prepare(
                    _input(request, contract.AUDIO),
                    _input(request, contract.AUDIO_BYTES),
                    _input(request, contract.OPTIONS),
                )
            except Exception as exc:  # noqa: BLE001 - the client's mistake (a ClientError), or ours: logged
                responses.append(error_response(pb_utils, MODEL, exc))
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
