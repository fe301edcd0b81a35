"""Triton model `whisper_encoder` on the Python backend: the ONNX encoder in ONNX Runtime (CPU servers).

Clients call the `whisper` ensemble, but nothing stops them from calling this model directly: its input
is checked (shape, window count within the server's duration limit, finite values) like a request's.
"""

import json
import pathlib

# Before numpy and whisper_triton: the bundled code, then PYTHONPATH, first on sys.path.
import _whisper_triton_paths  # noqa: F401
import numpy as np
import triton_python_backend_utils as pb_utils

import whisper_triton
from whisper_triton import contract
from whisper_triton.native import return_large_blocks_at_once
from whisper_triton.onnx_runtime import OnnxEncoder
from whisper_triton.serving import check_encoder_input, error_response

MODEL = contract.ENCODER_MODEL


class TritonPythonModel:
    def initialize(self, args):
        # Which code this model runs: the copy bundled next to model.py (tests/test_deployment.py reads it).
        pb_utils.Logger.log_info(f"{args['model_name']}: whisper_triton from {whisper_triton.__path__[0]}")
        return_large_blocks_at_once()
        parameters = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.encoder = OnnxEncoder(pathlib.Path(__file__).parent, threads=int(parameters["threads"]))
        self.shape = (int(parameters["n_mels"]), int(parameters["n_frames"]))
        self.max_windows = int(parameters["max_windows"])

    def execute(self, requests):
        # The dynamic batcher groups requests with equally many windows: [1, windows, n_mels, 3000] each.
        responses = [None] * len(requests)
        valid, batch = [], []
        for index, request in enumerate(requests):
            features = pb_utils.get_input_tensor_by_name(request, contract.INPUT_FEATURES).as_numpy()
            try:
                check_encoder_input(features, *self.shape, self.max_windows)
            except Exception as exc:  # noqa: BLE001 - the client's mistake (a ClientError), or ours: logged
                responses[index] = error_response(pb_utils, MODEL, exc)
                continue
            valid.append(index)
            batch.append(features)
        if not valid:
            return responses
        try:
            states = self.encoder(np.concatenate(batch))
        except Exception as exc:  # noqa: BLE001 - a server fault: logged, the client told no internals
            for index in valid:
                responses[index] = error_response(pb_utils, MODEL, exc)
            return responses
        for position, index in enumerate(valid):
            tensor = pb_utils.Tensor(contract.ENCODER_OUTPUT, states[position : position + 1])
            responses[index] = pb_utils.InferenceResponse([tensor])
        return responses
