"""Triton model `whisper_encoder` on the Python backend: the ONNX encoder in ONNX Runtime (CPU servers)."""

import json
import pathlib

# Before numpy and whisper_triton: the bundled code, then PYTHONPATH, first on sys.path.
import _whisper_triton_paths  # noqa: F401
import numpy as np
import triton_python_backend_utils as pb_utils

import whisper_triton
from whisper_triton import contract
from whisper_triton.onnx_runtime import OnnxEncoder


class TritonPythonModel:
    def initialize(self, args):
        # Which code this model runs: the copy bundled next to model.py (tests/test_deployment.py reads it).
        pb_utils.Logger.log_info(f"{args['model_name']}: whisper_triton from {whisper_triton.__path__[0]}")
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
