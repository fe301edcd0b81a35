"""Voice activity detection with Silero VAD (ONNX, MIT licence): where the speech is in a recording.

The model is Silero's sequence export (``silero_vad_16k_sequence.onnx`` of the PyPI ``silero-vad``
package): it reads frames of 512 new samples (32 ms at 16 kHz), each with the 64 samples before it as
context, and carries its LSTM state from frame to frame inside one call, so a whole recording is one
ONNX Runtime run (10 minutes: ~19,000 frames, about a second on one core). ``whisper-triton build``
copies the file next to the feature model.

:func:`speech_regions` turns the per-frame probabilities into speech regions with the usual rules
(Silero's, as faster-whisper applies them): speech starts where the probability reaches ``threshold``
and ends where it stays below ``threshold - 0.15`` for ``min_silence_ms``; regions shorter than
``min_speech_ms`` are dropped; each is padded by ``pad_ms`` (never past its neighbours).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_triton.constants import SAMPLE_RATE

MODEL_FILE = "silero_vad.onnx"  # its name inside a model repository
PACKAGE_MODEL = "silero_vad_16k_sequence.onnx"  # its name in the silero-vad package
FRAME = 512  # new samples per frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame each frame also sees
STATE = 128  # LSTM width
CALL_FRAMES = 10_000  # frames per ONNX Runtime call (5.3 minutes): bounds the input tensor at ~23 MB
FRAME_SECONDS = FRAME / SAMPLE_RATE


@dataclass(frozen=True)
class VadParameters:
    """How probabilities become speech regions (faster-whisper's ``vad_filter`` defaults)."""

    threshold: float = 0.5  # a frame at or above this probability is speech
    min_speech_ms: int = 0  # shorter speech regions are dropped
    min_silence_ms: int = 2000  # a region ends only after this much silence
    pad_ms: int = 400  # speech kept on each side of a region

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        for name in ("min_speech_ms", "min_silence_ms", "pad_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"VAD {name} must be a non-negative integer, got {value!r}")


def package_model_path() -> Path:
    """The ONNX file shipped in the ``silero-vad`` package (a build dependency, not a server one)."""
    try:
        path = importlib.resources.files("silero_vad") / "data" / PACKAGE_MODEL
    except ModuleNotFoundError as error:
        raise FileNotFoundError(
            "the silero-vad package is not installed (pip install 'whisper-triton[build]')"
        ) from error
    return Path(str(path))


class SileroVad:
    """Speech probability of every 32-ms frame of 16 kHz audio."""

    def __init__(self, path: str | Path | None = None, threads: int = 1):
        import onnxruntime as ort

        path = Path(path) if path is not None else package_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"Silero VAD model {path} is missing")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see onnx_runtime.py
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """``[ceil(len / 512)]`` speech probabilities; the last frame is zero-padded."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        frames = -(-audio.size // FRAME)
        if frames == 0:
            return np.zeros(0, np.float32)
        padded = np.zeros(frames * FRAME, np.float32)
        padded[: audio.size] = audio
        blocks = padded.reshape(frames, FRAME)
        context = np.zeros((frames, CONTEXT), np.float32)
        context[1:] = blocks[:-1, -CONTEXT:]
        inputs = np.concatenate([context, blocks], axis=1)
        h = np.zeros((1, 1, STATE), np.float32)
        c = np.zeros((1, 1, STATE), np.float32)
        probabilities = []
        for start in range(0, frames, CALL_FRAMES):
            out, h, c = self._session.run(
                None, {"input": inputs[start : start + CALL_FRAMES], "h": h, "c": c}
            )
            probabilities.append(out.reshape(-1))
        return np.concatenate(probabilities).astype(np.float32)


def speech_regions(
    probabilities: np.ndarray, total_samples: int, parameters: VadParameters | None = None
) -> list[tuple[int, int]]:
    """(start, end) sample ranges of speech, padded, in order, not overlapping."""
    parameters = parameters or VadParameters()
    frames_per_ms = SAMPLE_RATE / FRAME / 1000
    min_silence = max(1, round(parameters.min_silence_ms * frames_per_ms))
    ending = parameters.threshold - 0.15  # hysteresis: a dip just under the threshold does not end speech
    regions, start, silent_since = [], None, None
    for index, probability in enumerate(probabilities):
        if start is None:
            if probability >= parameters.threshold:
                start, silent_since = index, None
        elif probability >= parameters.threshold:
            silent_since = None  # speech again: a pending end is cancelled
        elif probability < ending:  # between the two thresholds neither starts nor cancels a silence
            silent_since = index if silent_since is None else silent_since
            if index - silent_since + 1 >= min_silence:
                regions.append((start, silent_since))
                start, silent_since = None, None
    if start is not None:
        regions.append((start, len(probabilities) if silent_since is None else silent_since))
    min_speech = parameters.min_speech_ms * frames_per_ms
    samples = [(a * FRAME, min(b * FRAME, total_samples)) for a, b in regions if b - a >= min_speech]
    return _pad(samples, total_samples, int(parameters.pad_ms * SAMPLE_RATE / 1000))


def _pad(regions: list[tuple[int, int]], total: int, pad: int) -> list[tuple[int, int]]:
    """Widen each region by ``pad`` samples on both sides; neighbours closer than 2 x pad share the gap."""
    padded = []
    for index, (start, end) in enumerate(regions):
        low = max(0, start - pad)
        high = min(total, end + pad)
        if index > 0:
            previous_end = regions[index - 1][1]
            if start - previous_end < 2 * pad:
                low = (previous_end + start) // 2
        if index + 1 < len(regions):
            next_start = regions[index + 1][0]
            if next_start - end < 2 * pad:
                high = (end + next_start) // 2
        padded.append((low, high))
    return padded
