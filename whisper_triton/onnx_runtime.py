"""ONNX Runtime execution of an exported model, in-process: the encoder and the decoder backend.

Used by the Triton Python-backend models on CPU (``--runtime python``), by the decoding model of every
runtime (the decoder loop always runs in-process, see LESSONS.md), and by the build's parity check.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from whisper_triton.manifest import ModelManifest

ENCODER_FILE = "encoder.onnx"
CROSS_KV_FILE = "cross_kv.onnx"
DECODER_FILE = "decoder.onnx"


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or int(os.environ.get("WHISPER_TRITON_THREADS", "0"))
    options.inter_op_num_threads = 1
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX model {path} is missing; run python -m build")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    def __init__(self, directory: str | Path, threads: int | None = None):
        self._session = session(Path(directory) / ENCODER_FILE, threads)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Encoder states ``[N, 1500, d]`` of windows ``[N, n_mels, 3000]``, or ``[B, N, ...]`` of ``[B, N, ...]``."""
        batched = np.ascontiguousarray(features, dtype=np.float32)
        states = self._session.run(None, {"input_features": batched if batched.ndim == 4 else batched[None]})[
            0
        ]
        return states if batched.ndim == 4 else states[0]


class OnnxDecoderBackend:
    """``DecoderBackend`` over cross_kv.onnx and decoder.onnx; every cache and cross tensor has batch on axis 1."""

    def __init__(self, directory: str | Path, manifest: ModelManifest, threads: int | None = None):
        directory = Path(directory)
        self.manifest = manifest
        self._cross = session(directory / CROSS_KV_FILE, threads)
        self._decoder = session(directory / DECODER_FILE, threads)

    def cross_attention(self, encoder_output: np.ndarray):
        keys, values = self._cross.run(
            None, {"encoder_output": np.ascontiguousarray(encoder_output, dtype=np.float32)}
        )
        return keys, values

    def new_cache(self, batch: int):
        heads = self.manifest.decoder_heads
        empty = np.zeros(
            (self.manifest.decoder_layers, batch, heads, 0, self.manifest.d_model // heads), np.float32
        )
        return empty, empty

    def step(self, tokens: np.ndarray, cache, cross):
        logits, keys, values = self._decoder.run(
            None,
            {
                "tokens": tokens,
                "self_k": cache[0],
                "self_v": cache[1],
                "cross_k": cross[0],
                "cross_v": cross[1],
            },
        )
        return logits, (keys, values)

    def select(self, cache, cross, rows: np.ndarray, same_windows: bool = False):
        cache = (cache[0][:, rows], cache[1][:, rows])
        return cache, cross if same_windows else (cross[0][:, rows], cross[1][:, rows])
