"""Triton model `whisper_decoder`: guarded greedy/beam search in-process over the decoder with its KV cache.

The decoder runs with ONNX Runtime (cross_kv.onnx, decoder.onnx), or as TensorRT engines on this
instance's GPU when the build put cross_kv.plan and decoder.plan here (--runtime tensorrt). Windows whose
decoding stopped before their speech did are continued: their shifted log-mel goes back through the
`whisper_encoder` model (a BLS call), so the encoder stays where the repository put it.
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
from whisper_triton.decoding import Decoder
from whisper_triton.manifest import TOKENIZER_FILE, ModelManifest
from whisper_triton.native import release_free_memory, return_large_blocks_at_once
from whisper_triton.onnx_runtime import OnnxDecoderBackend
from whisper_triton.options import DecodingOptions
from whisper_triton.serving import check_decoder_inputs, error_response, response_json
from whisper_triton.tensorrt_runtime import DECODER_ENGINE
from whisper_triton.tokenizer import TextTokenizer
from whisper_triton.transcriber import Transcriber
from whisper_triton.windows import Windows

# Freed memory goes back to the system after batches of more than this many rows (windows x beams). A
# smaller batch's memory is kept for the next one: trimming after every short request made the next one
# fault ~55 MB back in (14k page faults per 3-s clip, measured in-process).
TRIM_ABOVE_ROWS = 16
MODEL = contract.DECODER_MODEL


class TritonPythonModel:
    def initialize(self, args):
        # Which code this model runs: the copy bundled next to model.py (tests/test_deployment.py reads it).
        pb_utils.Logger.log_info(f"{args['model_name']}: whisper_triton from {whisper_triton.__path__[0]}")
        return_large_blocks_at_once()
        parameters = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        directory = pathlib.Path(__file__).parent
        self.manifest = ModelManifest.load(directory)
        self.encoder_input, self.encoder_output = parameters["encoder_input"], parameters["encoder_output"]
        self.max_windows = int(parameters["max_windows"])
        # Continuation windows of several requests go to the encoder in calls it accepts from one request.
        self.encoder_max_windows = min(int(parameters["encoder_max_windows"]), self.max_windows)
        if (directory / DECODER_ENGINE).is_file():
            from whisper_triton.tensorrt_runtime import TensorRTDecoderBackend

            device = int(args.get("model_instance_device_id") or 0)
            backend = TensorRTDecoderBackend.from_directory(directory, self.manifest, device=device)
        else:
            backend = OnnxDecoderBackend(directory, self.manifest, threads=int(parameters["threads"]))
        decoder = Decoder(backend, self.manifest, TextTokenizer(directory / TOKENIZER_FILE))
        self.transcriber = Transcriber(self._encode, decoder, max_rows=int(parameters["max_decoder_rows"]))

    def _encode(self, features: np.ndarray) -> np.ndarray:
        """Encoder states of windows ``[W, n_mels, 3000]`` from the `whisper_encoder` model (BLS)."""
        states = []
        for start in range(0, len(features), self.encoder_max_windows):
            batch = np.ascontiguousarray(features[start : start + self.encoder_max_windows][None], np.float32)
            response = pb_utils.InferenceRequest(
                model_name=contract.ENCODER_MODEL,
                requested_output_names=[self.encoder_output],
                inputs=[pb_utils.Tensor(self.encoder_input, batch)],
            ).exec()
            if response.has_error():
                raise RuntimeError(f"whisper_encoder: {response.error().message()}")
            states.append(pb_utils.get_output_tensor_by_name(response, self.encoder_output).as_numpy()[0])
        return np.concatenate(states)

    def execute(self, requests):
        # Requests with the same options are decoded together: all their windows step through the
        # decoder as one batch (within max_decoder_rows), and finished windows leave it as they end.
        groups = defaultdict(list)
        inputs = {}
        responses = [None] * len(requests)
        for index, request in enumerate(requests):
            get = lambda name, r=request: pb_utils.get_input_tensor_by_name(r, name).as_numpy()  # noqa: E731
            states, features, windows = (
                get(contract.ENCODER_OUTPUT),
                get(contract.INPUT_FEATURES),
                get(contract.WINDOWS),
            )
            try:
                # The ensemble sends valid tensors; a direct call to this model is checked like a request.
                check_decoder_inputs(states, features, windows, self.manifest, self.max_windows)
                options = get(contract.DECODE_OPTIONS).reshape(-1)[0]
                DecodingOptions.from_json(options)
            except Exception as exc:  # noqa: BLE001 - the client's mistake (a ClientError), or ours: logged
                responses[index] = error_response(pb_utils, MODEL, exc)
                continue
            inputs[index] = (states[0], features[0], Windows.from_array(windows[0]))
            groups[options].append(index)
        rows = 0  # windows x beams decoded in this execution
        for options_json, members in groups.items():
            try:
                options = DecodingOptions.from_json(options_json)
                windows = [inputs[i][2] for i in members]
                rows += sum(len(w) for w in windows) * options.beam_size
                pieces = self.transcriber.decode_windows(
                    np.concatenate([inputs[i][0] for i in members]),
                    np.concatenate([inputs[i][1] for i in members]),
                    Windows.from_array(np.concatenate([w.to_array() for w in windows])),
                    options,
                )
            except Exception as exc:  # noqa: BLE001 - the client's mistake (a ClientError), or ours: logged
                for i in members:
                    responses[i] = error_response(pb_utils, MODEL, exc)
                continue
            start = 0
            for i in members:
                count = len(inputs[i][2])
                text, segments = response_json(
                    pieces[start : start + count], inputs[i][2], options, self.manifest
                )
                start += count
                responses[i] = pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(contract.TEXT, np.array([[text.encode()]], dtype=object)),
                        pb_utils.Tensor(contract.SEGMENTS, np.array([[segments.encode()]], dtype=object)),
                    ]
                )
        if rows > TRIM_ABOVE_ROWS:
            release_free_memory()  # without it glibc keeps a large batch's peak for good
        return responses
