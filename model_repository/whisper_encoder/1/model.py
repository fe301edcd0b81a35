"""Triton model `whisper_encoder` on the Python backend: the ONNX encoder in ONNX Runtime (CPU servers)."""

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
from whisper_triton.onnx_runtime import OnnxEncoder


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(config["parameters"]["threads"]["string_value"])
        self.encoder = OnnxEncoder(pathlib.Path(__file__).parent, threads=threads)

    def execute(self, requests):
        # The dynamic batcher groups requests with equally many windows: [1, windows, n_mels, 3000] each.
        batch = [pb_utils.get_input_tensor_by_name(r, contract.INPUT_FEATURES).as_numpy() for r in requests]
        states = self.encoder(np.concatenate(batch))
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(contract.ENCODER_OUTPUT, states[i : i + 1])])
            for i in range(len(requests))
        ]
