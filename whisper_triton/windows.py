"""Split audio into windows of at most 30 seconds, cutting in pauses.

Each window is transcribed independently (so all windows of a request, and of concurrent requests, are
batched through the encoder and the decoder together) and its segments are shifted by its start time.
The audio is cut in the middle of every pause of at least ``MIN_PAUSE_SECONDS``, and consecutive pieces
are merged while the window stays within ``TARGET_SECONDS``. A piece longer than 30 s is cut where speech
is least likely in its last ``SEARCH_SECONDS``. Audio of at most 30 s is one window.

Pauses come from Silero VAD's speech probabilities (:mod:`whisper_triton.vad`) when they are given, else
from frame energy (a frame 40 dB below the loudest one is silent). The energy rule finds pauses in clean
audio only: with noise at 35 dB SNR or worse it finds none (docs/benchmarks.md, "Long-form WER").

Why 25 s and not the full 30 s: on 2.4 minutes of concatenated corpus speech (gaps of 0.3 and 0.5 s),
merging up to 25 s gave 7.3-7.6% WER against 10-12.5% for 30-s windows cut at their longest pause, and
8.1% for the same sentences transcribed one by one (docs/benchmarks.md, "Long-form WER").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_triton.constants import CHUNK_LENGTH, FRAMES_PER_SECOND, HOP_LENGTH, N_FFT, SAMPLE_RATE
from whisper_triton.vad import FRAME, VadParameters, speech_regions

SILENCE_DB = -40.0  # energy detector: frames this far below the loudest frame count as pause
MIN_PAUSE_SECONDS = 0.2  # shorter dips are inside words or between close words: never cut there
TARGET_SECONDS = 25.0  # merge pause-separated pieces up to this length
SEARCH_SECONDS = 10.0  # a piece without pauses is cut at the least speech-like point this close to 30 s
PAUSE_VAD = VadParameters(min_silence_ms=int(MIN_PAUSE_SECONDS * 1000), pad_ms=0)
FILTER_VAD = VadParameters()  # vad_filter: faster-whisper's defaults (2 s of silence ends speech, 0.4 s pad)
WINDOW_FIELDS = 3  # start, end, speech end: the columns of the WINDOWS tensor


@dataclass(frozen=True)
class Windows:
    """Windows of audio in seconds: where each starts and ends, and where its last speech ends (its start
    when it holds none). On the wire (the WINDOWS tensor) they are one ``[W, 3]`` float32 array in this
    column order; Python code reads them by name."""

    start: np.ndarray
    end: np.ndarray
    speech_end: np.ndarray

    @classmethod
    def from_array(cls, array: np.ndarray) -> Windows:
        """The windows of a ``[W, 3]`` WINDOWS array."""
        if array.ndim != 2 or array.shape[1] != WINDOW_FIELDS:
            raise ValueError(f"windows must be [W, {WINDOW_FIELDS}], got {list(array.shape)}")
        values = array.astype(np.float64)
        return cls(values[:, 0], values[:, 1], values[:, 2])

    def to_array(self) -> np.ndarray:
        """The ``[W, 3]`` float32 WINDOWS array."""
        return np.stack([self.start, self.end, self.speech_end], axis=1).astype(np.float32)

    def __len__(self) -> int:
        return len(self.start)

    @property
    def duration(self) -> np.ndarray:
        """Seconds of audio in each window."""
        return self.end - self.start

    @property
    def speech(self) -> np.ndarray:
        """Seconds from each window's start to the end of its last speech (0: no speech)."""
        return self.speech_end - self.start

    @property
    def has_speech(self) -> np.ndarray:
        """Whether each window holds any speech (only these are decoded)."""
        return self.speech_end > self.start

    def __getitem__(self, index) -> Windows:
        """The windows at ``index`` (a slice, or an array of indices)."""
        return Windows(self.start[index], self.end[index], self.speech_end[index])


def split_windows(
    audio: np.ndarray,
    speech_probabilities: np.ndarray | None = None,
    max_seconds: float = CHUNK_LENGTH,
    target_seconds: float = TARGET_SECONDS,
) -> list[tuple[int, int]]:
    """(start, end) sample indices of consecutive windows covering ``audio``, each <= ``max_seconds``."""
    size = audio.shape[0]
    limit = int(max_seconds * SAMPLE_RATE)
    if size <= limit:
        return [(0, size)]
    if speech_probabilities is not None:
        cuts = _vad_pause_middles(speech_probabilities, size)
        score = np.repeat(speech_probabilities, FRAME)[:size]  # high where speech is likely
    else:
        cuts = _energy_pause_middles(audio)
        score = None
    pieces = _pieces(size, cuts, limit, score)
    return _merge(pieces, min(int(target_seconds * SAMPLE_RATE), limit))


def speech_windows(
    audio: np.ndarray,
    speech_probabilities: np.ndarray,
    parameters: VadParameters = FILTER_VAD,
    max_seconds: float = CHUNK_LENGTH,
    target_seconds: float = TARGET_SECONDS,
) -> list[tuple[int, int]]:
    """Windows covering only the speech regions (``vad_filter``): the audio between them is not decoded.

    Regions closer together than a window are grouped into one window (the short silences inside stay);
    a region longer than ``max_seconds`` is split like :func:`split_windows`.
    """
    limit, target = int(max_seconds * SAMPLE_RATE), int(target_seconds * SAMPLE_RATE)
    windows: list[tuple[int, int]] = []
    for start, end in speech_regions(speech_probabilities, audio.shape[0], parameters):
        if end - start > limit:
            frames = slice(start // FRAME, -(-end // FRAME))
            inner = split_windows(audio[start:end], speech_probabilities[frames], max_seconds, target_seconds)
            windows += [(start + a, start + b) for a, b in inner]
        elif windows and end - windows[-1][0] <= target:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def speech_end(speech_probabilities: np.ndarray | None, start: int, end: int, threshold: float = 0.5) -> int:
    """The sample where the last speech frame within ``[start, end)`` ends (``end`` without probabilities,
    ``start`` when the range holds no speech)."""
    if speech_probabilities is None:
        return end
    first, last = start // FRAME, -(-end // FRAME)
    speech = np.flatnonzero(speech_probabilities[first:last] >= threshold)
    if speech.size == 0:
        return start
    return min(end, (first + int(speech[-1]) + 1) * FRAME)


def _pieces(size: int, cuts: list[int], limit: int, score: np.ndarray | None) -> list[tuple[int, int]]:
    pieces, start = [], 0
    for cut in [*cuts, size]:
        while cut - start > limit:  # no pause within 30 s: cut where speech is least likely
            forced = _forced_cut(start, limit, score)
            pieces.append((start, forced))
            start = forced
        if cut > start:
            pieces.append((start, cut))
            start = cut
    return pieces


def _forced_cut(start: int, limit: int, score: np.ndarray | None) -> int:
    if score is None:
        return start + limit
    search = int(SEARCH_SECONDS * SAMPLE_RATE)
    low = start + limit - search
    return low + int(np.argmin(score[low : start + limit]))


def _merge(pieces: list[tuple[int, int]], target: int) -> list[tuple[int, int]]:
    windows = [pieces[0]]
    for piece_start, piece_end in pieces[1:]:
        if piece_end - windows[-1][0] <= target:
            windows[-1] = (windows[-1][0], piece_end)
        else:
            windows.append((piece_start, piece_end))
    return windows


def _vad_pause_middles(probabilities: np.ndarray, size: int) -> list[int]:
    """Sample positions in the middle of every pause (a gap between speech regions) of >= MIN_PAUSE."""
    regions = speech_regions(probabilities, size, PAUSE_VAD)
    return [(end + next_start) // 2 for (_, end), (next_start, _) in zip(regions, regions[1:], strict=False)]


def _energy_pause_middles(audio: np.ndarray) -> list[int]:
    """Sample positions in the middle of every energy pause of at least ``MIN_PAUSE_SECONDS``."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::HOP_LENGTH]
    energy = np.mean(frames.astype(np.float64) ** 2, axis=-1)
    with np.errstate(divide="ignore"):
        level = 10 * np.log10(energy / max(energy.max(), 1e-20))
    silent = np.concatenate([[False], level < SILENCE_DB, [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]  # frame runs [start, end) of silence
    long_enough = (ends - starts) >= MIN_PAUSE_SECONDS * FRAMES_PER_SECOND
    # Frame i covers samples [i * hop, i * hop + n_fft): its centre is i * hop + n_fft / 2.
    return [
        int((s + e) // 2 * HOP_LENGTH + N_FFT // 2)
        for s, e in zip(starts[long_enough], ends[long_enough], strict=True)
    ]
