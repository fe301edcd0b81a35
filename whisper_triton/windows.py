"""Split long audio into windows of at most 30 seconds, cutting in pauses.

Each window is transcribed independently (so all windows of a request, and of concurrent requests, are
batched through the encoder and the decoder together) and its segments are shifted by its start time.
The cut points are found with a frame-energy voice-activity detector: the longest pause in the last
part of each window, so no word is cut unless a speaker talks 30 s without a pause (then the window is
cut hard at 30 s). Audio of at most 30 s is one window.
"""

from __future__ import annotations

import numpy as np

from whisper_triton.constants import CHUNK_LENGTH, HOP_LENGTH, N_FFT, SAMPLE_RATE

SILENCE_DB = -40.0  # frames this far below the loudest frame count as pause
MIN_WINDOW_SECONDS = 10.0  # look for a cut only after this much of a window: avoids tiny windows


def split_windows(audio: np.ndarray, max_seconds: float = CHUNK_LENGTH) -> list[tuple[int, int]]:
    """(start, end) sample indices of consecutive windows covering ``audio``, each <= ``max_seconds``."""
    size = audio.shape[0]
    limit = int(max_seconds * SAMPLE_RATE)
    if size <= limit:
        return [(0, size)]
    silent = _silent_frames(audio)
    windows, start = [], 0
    while size - start > limit:
        lowest = start + int(MIN_WINDOW_SECONDS * SAMPLE_RATE)
        cut = _best_cut(silent, lowest, start + limit) or start + limit
        windows.append((start, cut))
        start = cut
    windows.append((start, size))
    return windows


def _silent_frames(audio: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::HOP_LENGTH]
    energy = np.mean(frames.astype(np.float64) ** 2, axis=-1)
    with np.errstate(divide="ignore"):
        level = 10 * np.log10(energy / max(energy.max(), 1e-20))
    return level < SILENCE_DB


def _best_cut(silent: np.ndarray, low: int, high: int) -> int | None:
    """The sample at the middle of the longest pause between samples ``low`` and ``high``."""
    first, last = low // HOP_LENGTH, min(high // HOP_LENGTH, silent.size)
    best, best_length, run_start = None, 0, None
    for frame in range(first, last + 1):
        is_silent = frame < last and silent[frame]
        if is_silent and run_start is None:
            run_start = frame
        elif not is_silent and run_start is not None:
            if frame - run_start > best_length:
                best_length, best = frame - run_start, (run_start + frame) // 2
            run_start = None
    if best is None:
        return None
    return min(best * HOP_LENGTH + N_FFT // 2, high)
