"""Triton model `whisper_decoder`: greedy/beam search in-process over the decoder with its KV cache.

The decoder runs with ONNX Runtime (cross_kv.onnx, decoder.onnx), or as TensorRT engines on this
instance's GPU when the build put cross_kv.plan and decoder.plan here (--runtime tensorrt).
"""

import json
import pathlib
from collections import defaultdict

# Before numpy and whisper_triton: the bundled code, then PYTHONPATH, first on sys.path.
import _whisper_triton_paths  # noqa: F401
import numpy as np
import triton_python_backend_utils as pb_utils

import whisper_triton
from whisper_triton import contract
from whisper_triton.decoding import decode
from whisper_triton.manifest import TOKENIZER_FILE, ModelManifest
from whisper_triton.onnx_runtime import OnnxDecoderBackend
from whisper_triton.options import DecodingOptions
from whisper_triton.serving import response_json
from whisper_triton.tensorrt_runtime import DECODER_ENGINE
from whisper_triton.tokenizer import TextTokenizer


class TritonPythonModel:
    def initialize(self, args):
        # Which code this model runs: the copy bundled next to model.py (tests/test_deployment.py reads it).
        pb_utils.Logger.log_info(f"{args['model_name']}: whisper_triton from {whisper_triton.__path__[0]}")
        config = json.loads(args["model_config"])
        threads = int(config["parameters"]["threads"]["string_value"])
        directory = pathlib.Path(__file__).parent
        self.manifest = ModelManifest.load(directory)
        self.tokenizer = TextTokenizer(directory / TOKENIZER_FILE)
        if (directory / DECODER_ENGINE).is_file():
            from whisper_triton.tensorrt_runtime import TensorRTDecoderBackend

            device = int(args.get("model_instance_device_id") or 0)
            self.backend = TensorRTDecoderBackend.from_directory(directory, self.manifest, device=device)
        else:
            self.backend = OnnxDecoderBackend(directory, self.manifest, threads=threads)

    def execute(self, requests):
        # Requests with the same options are decoded together: all their windows step through the
        # decoder as one batch, and finished windows leave the batch as they end.
        groups = defaultdict(list)
        inputs = []
        for index, request in enumerate(requests):
            states = pb_utils.get_input_tensor_by_name(request, contract.ENCODER_OUTPUT).as_numpy()
            windows = pb_utils.get_input_tensor_by_name(request, contract.WINDOWS).as_numpy()
            options = (
                pb_utils.get_input_tensor_by_name(request, contract.DECODE_OPTIONS).as_numpy().reshape(-1)[0]
            )
            inputs.append((states.reshape(-1, *states.shape[-2:]), windows.reshape(-1, 2)))
            groups[options].append(index)
        responses = [None] * len(requests)
        for options_json, members in groups.items():
            try:
                options = DecodingOptions.from_json(options_json)
                states = np.concatenate([inputs[i][0] for i in members])
                windows = np.concatenate([inputs[i][1] for i in members])
                results = decode(
                    self.backend,
                    states,
                    self.manifest,
                    options,
                    self.tokenizer,
                    windows[:, 1] - windows[:, 0],
                )
            except ValueError as exc:
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            start = 0
            for i in members:
                count = inputs[i][1].shape[0]
                text, segments = response_json(results[start : start + count], inputs[i][1])
                start += count
                responses[i] = pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(contract.TEXT, np.array([[text.encode()]], dtype=object)),
                        pb_utils.Tensor(contract.SEGMENTS, np.array([[segments.encode()]], dtype=object)),
                    ]
                )
        return responses
