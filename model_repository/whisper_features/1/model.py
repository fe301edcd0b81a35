"""Triton model `whisper_features`: validate a request, decode/resample audio, log-mel windows."""

# ruff: noqa: E402 -- the imports after the environment snippet need sys.path set first
import json
import pathlib
import sys

# The Triton Python stub ignores PYTHONPATH: put the server environment (environment.json, written by
# `python -m build`) first on sys.path, before anything imports numpy.
_ENVIRONMENT = pathlib.Path(__file__).resolve().parents[2] / "environment.json"
sys.path[:0] = json.loads(_ENVIRONMENT.read_text())["sys_path"]

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_triton import contract
from whisper_triton.serving import RequestError, prepare


class TritonPythonModel:
    def initialize(self, args):
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
