"""ONNX Runtime execution of an exported model, in-process: the encoder and the decoder backend.

Used by the Triton Python-backend models on CPU (``--runtime python``), by the decoding model of every
runtime (the decoder loop always runs in-process: a step per token through Triton would cost a request
per token), and by the build's parity check.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from whisper_triton.manifest import ModelManifest

ENCODER_FILE = "encoder.onnx"
CROSS_KV_FILE = "cross_kv.onnx"
DECODER_FILE = "decoder.onnx"


def session(path: str | Path, threads: int | None = None, arena: bool = True):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or int(os.environ.get("WHISPER_TRITON_THREADS", "0"))
    options.inter_op_num_threads = 1
    # No busy-waiting between runs: the features, encoder and decoder sessions (several processes under
    # Triton) share the cores, and an idle pool that spins steals them from the busy one. Measured on the
    # 2-core machine, int8 server: 8.6 -> 11.2 audio s/s at concurrency 1, 9.4 -> 12.6 at 4.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ``arena=False`` for graphs whose shapes change with every batch (the decoder's rows x cached
    # positions): ONNX Runtime's arena keeps every block it ever grew to, and a server's decoder grew by
    # ~3 MB a second under steady load; without it, freed tensors go back to malloc, which
    # release_free_memory() trims, at no measurable cost. The encoder (one window per call, one shape)
    # keeps its arena: without it, it was 20% slower.
    options.enable_cpu_mem_arena = arena
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX model {path} is missing; run whisper-triton build")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """The encoder graph, run one 30-s window per call.

    One window at a time on purpose. On CPU a batch of windows is no faster per window (tiny.en, 2 threads:
    214 ms alone, 256 ms each in a batch of 4), and the int8 encoder quantises its activations with one
    range per call: batched, a window's transcript would depend on which other windows happened to share
    its call (measured: 9.3% WER alone, 10.0% in batches of 8, on the 40-utterance test corpus).
    """

    def __init__(self, directory: str | Path, threads: int | None = None):
        self._session = session(Path(directory) / ENCODER_FILE, threads)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Encoder states ``[N, 1500, d]`` of windows ``[N, n_mels, 3000]``, or ``[B, N, ...]`` of ``[B, N, ...]``."""
        features = np.asarray(features, dtype=np.float32)
        windows = features.reshape(-1, 1, 1, *features.shape[-2:])
        states = np.concatenate(
            [self._session.run(None, {"input_features": np.ascontiguousarray(w)})[0][0] for w in windows]
        )
        return states.reshape(*features.shape[:-2], *states.shape[-2:])


class OnnxDecoderBackend:
    """``DecoderBackend`` over cross_kv.onnx and decoder.onnx; caches (rows) and cross K/V (windows) have
    their batch on axis 1."""

    def __init__(self, directory: str | Path, manifest: ModelManifest, threads: int | None = None):
        directory = Path(directory)
        self.manifest = manifest
        self._cross = session(directory / CROSS_KV_FILE, threads, arena=False)
        self._decoder = session(directory / DECODER_FILE, threads, arena=False)

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

    def select(self, cache, cross, rows: np.ndarray, windows: np.ndarray | None):
        cache = (cache[0][:, rows], cache[1][:, rows])
        return cache, cross if windows is None else (cross[0][:, windows], cross[1][:, windows])


def repository_transcriber(repository: str | Path, vad=None, pauses: str = "vad"):
    """The in-process :class:`~whisper_triton.transcriber.Transcriber` over a built model repository's
    ONNX graphs (``--runtime python``): the server's encoder and decoding, in one process."""
    from whisper_triton import contract
    from whisper_triton.decoding import Decoder
    from whisper_triton.manifest import TOKENIZER_FILE
    from whisper_triton.tokenizer import TextTokenizer
    from whisper_triton.transcriber import Transcriber

    repository = Path(repository)
    directory = repository / contract.DECODER_MODEL / "1"
    manifest = ModelManifest.load(directory)
    decoder = Decoder(
        OnnxDecoderBackend(directory, manifest), manifest, TextTokenizer(directory / TOKENIZER_FILE)
    )
    return Transcriber(OnnxEncoder(repository / contract.ENCODER_MODEL / "1"), decoder, vad, pauses)
