"""Whisper's log-mel spectrogram in numpy, batched: the one feature extractor of the project.

The result equals ``WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000,
return_tensors="np").input_features`` to within 1e-4 (tests/test_features.py measures it): audio is padded
with zeros or cut to 30 s, reflect-padded by ``n_fft // 2`` at both ends, framed every ``hop_length``
samples under a periodic Hann window, and the power spectrum of every frame but the last is projected on a
Slaney mel filterbank; then ``log10(max(mel, 1e-10))``, floored 8 (80 dB) below the clip's maximum, and
mapped by ``(x + 4) / 4``.

Only numpy is used (the Triton feature model must not need torch or librosa), and nothing loops over
frames in Python. ``np.fft.rfft`` has no batched SIMD path for 400-point transforms, so the DFT is done as
float32 matrix products (BLAS) on frames *folded* by the window's symmetries, which quarters the work of a
plain DFT matrix (see ``_fold_dft_plan``). Only the DFT bins that some mel filter uses are computed, the mel
projection skips the filterbank's zero blocks, and frames are processed in chunks of ``CHUNK_FRAMES`` so
that intermediates stay in cache. Frames lying wholly in the zero padding are not transformed: their mel
power is exactly 0, as in the reference, so they take the floor value directly.

Float32 is enough: against transformers (float32 torch STFT or float64 numpy STFT) the largest difference
is about 3e-5 on speech and below 1e-5 on noise, because only values within 80 dB of the peak survive the
floor, and float32 rounding there is far below the tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from whisper_triton.audio import resample
from whisper_triton.constants import CHUNK_LENGTH, HOP_LENGTH, N_FFT, N_MELS, N_SAMPLES, SAMPLE_RATE

LOG_FLOOR = 1e-10  # mel power floor before log10 (-100 dB): digital silence must not give log(0)
DYNAMIC_RANGE = 8.0  # log10 units (80 dB) kept below each utterance's loudest mel value
CHUNK_FRAMES = 750  # frames per chunk: ~6 KB of float32 intermediates per frame, ~4 MB in all, stays in cache
MEL_GROUPS = 4  # mel filters projected in 4 groups, each on its own bin range: a quarter of the dense work


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The log-mel parameters of one model, as its ``preprocessor_config.json`` states them."""

    n_mels: int = N_MELS  # mel bins: 80, or 128 for large-v3 ("feature_size")
    n_fft: int = N_FFT  # STFT window and FFT length in samples ("n_fft")
    hop_length: int = HOP_LENGTH  # samples between frames ("hop_length")
    sample_rate: int = SAMPLE_RATE  # Hz; every Whisper model uses 16 kHz ("sampling_rate")
    chunk_length: int = CHUNK_LENGTH  # seconds per encoder window ("chunk_length")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FeatureConfig.{field.name} must be a positive integer, got {value!r}")
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"FeatureConfig.sample_rate must be {SAMPLE_RATE} (every Whisper model is trained at 16 kHz), "
                f"got {self.sample_rate}"
            )
        if not 0 < self.hop_length <= self.n_fft:
            raise ValueError(
                f"FeatureConfig.hop_length must be in 1..n_fft={self.n_fft}, got {self.hop_length}"
            )

    @property
    def n_samples(self) -> int:
        """Samples in one encoder window (480000 for 30 s at 16 kHz)."""
        return self.chunk_length * self.sample_rate

    @property
    def n_frames(self) -> int:
        """Mel frames in one encoder window (3000)."""
        return self.n_samples // self.hop_length

    @classmethod
    def from_preprocessor_config(cls, path_or_dict: str | Path | dict) -> FeatureConfig:
        """Read a transformers ``preprocessor_config.json`` (a file, its folder, or the parsed dict).

        Keys: ``feature_size``, ``n_fft``, ``hop_length``, ``sampling_rate``, ``chunk_length``; a missing key
        takes WhisperFeatureExtractor's default (the constants). ``n_samples`` and ``nb_max_frames``, when
        present, must agree with the others.
        """
        if isinstance(path_or_dict, dict):
            source, config = "preprocessor config", path_or_dict
        else:
            path = Path(path_or_dict)
            if path.is_dir():
                path = path / "preprocessor_config.json"
            source, config = str(path), json.loads(path.read_text())
        keys = {
            "n_mels": "feature_size",
            "n_fft": "n_fft",
            "hop_length": "hop_length",
            "sample_rate": "sampling_rate",
            "chunk_length": "chunk_length",
        }
        try:
            result = cls(**{field: config[key] for field, key in keys.items() if key in config})
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error
        for key, expected in (("n_samples", result.n_samples), ("nb_max_frames", result.n_frames)):
            if key in config and config[key] != expected:
                raise ValueError(f"{source}: {key} is {config[key]}, but the other keys imply {expected}")
        return result

    def to_preprocessor_dict(self) -> dict:
        """The keys of a transformers ``preprocessor_config.json`` that these parameters fill."""
        return {
            "feature_size": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "sampling_rate": self.sample_rate,
            "chunk_length": self.chunk_length,
            "n_samples": self.n_samples,
            "nb_max_frames": self.n_frames,
        }

    def extract(self, audio, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """:func:`extract_features` with this model's parameters."""
        return extract_features(
            audio, sample_rate, self.n_mels, self.n_fft, self.hop_length, chunk_length=self.chunk_length
        )


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-300) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0), mel * 200.0 / 3.0)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-normalised mel filterbank ``[n_mels, n_fft // 2 + 1]`` (float32, read-only, cached).

    Equals ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)`` (fmin 0, fmax Nyquist), the
    filterbank Whisper ships as ``mel_filters.npz``: triangles between mel-spaced edges, each scaled by
    2 / (its width in Hz) so that every filter has the same area.
    """
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Constant matrices of the folded DFT and of the mel projection for one (n_mels, n_fft, sample_rate)."""

    w: np.ndarray  # [q] window at n = 1..q (also at N - n)
    v: np.ndarray  # [q] window at N/2 - n (also at N/2 + n)
    cos_even: np.ndarray  # [q + 2, even bins]: rows n = 1..q, then x[M] + x[3M], x[N/2]
    sin_even: np.ndarray  # [q, even bins]
    cos_odd: np.ndarray  # [q + 1, odd bins]: rows n = 1..q, then x[N/2]
    sin_odd: np.ndarray  # [q + 1, odd bins]: rows n = 1..q, then x[M] - x[3M]
    n_bins: int  # bins computed: the contiguous range that the mel filters use
    even: slice  # where the even bins sit in that range
    odd: slice
    mel_groups: tuple  # (mel slice, bin slice, [bins, mels] weights): the filterbank's non-zero blocks


@functools.lru_cache(maxsize=8)
def _fold_dft_plan(n_mels: int, n_fft: int, sample_rate: int) -> _Plan:
    """Matrices for the power spectrum of Hann-windowed frames after folding them in four.

    With N = n_fft = 4M and window w (symmetric, w[N - m] = w[m], and w[0] = 0), the samples of a frame
    x[m] fall into quadruples {n, N - n, N/2 - n, N/2 + n}, n = 1..M-1, plus x[M], x[3M] and x[N/2].
    For bin k and t = 2 pi k n / N, cos and sin at the four positions differ only by signs, (-1)^k for the
    pair around N/2. With P = x[n] + x[N-n], R = x[N/2-n] + x[N/2+n], S = x[n] - x[N-n],
    T = x[N/2+n] - x[N/2-n] and v[n] = w[N/2 - n]:

        even k:  Re = sum_n cos(t) (w P + v R) + w[M] cos(pi k / 2) (x[M] + x[3M]) + w[N/2] x[N/2]
                 Im = sum_n sin(t) (w S + v T)
        odd k:   Re = sum_n cos(t) (w P - v R) - w[N/2] x[N/2]
                 Im = sum_n sin(t) (w S - v T) + w[M] sin(pi k / 2) (x[M] - x[3M])

    (Im up to its sign, which the power ignores.) So four products with M-1 (+ 1 or 2) rows each replace
    one of N rows: a quarter of the multiply-adds, for a few elementwise operations on the frames.
    """
    if n_fft % 4:
        raise ValueError(f"n_fft must be a multiple of 4 (every Whisper model uses {N_FFT}), got {n_fft}")
    filters = mel_filters(n_mels, n_fft, sample_rate)
    used = np.flatnonzero(filters.any(axis=0))
    lo, hi = int(used[0]), int(used[-1]) + 1  # triangles tile the band: the used bins form one range
    bins = np.arange(lo, hi)
    even, odd = bins[bins % 2 == 0], bins[bins % 2 == 1]
    quarter = n_fft // 4
    n = np.arange(1, quarter)
    # Periodic Hann, as torch.hann_window and transformers' window_function(periodic=True).
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)

    def basis(trig, k):
        return trig(2.0 * np.pi * np.outer(n, k) / n_fft)

    cos_even = np.vstack(
        [
            basis(np.cos, even),
            window[quarter] * np.cos(np.pi * even / 2)[None],
            np.full((1, even.size), window[2 * quarter]),
        ]
    )
    cos_odd = np.vstack([basis(np.cos, odd), np.full((1, odd.size), -window[2 * quarter])])
    sin_odd = np.vstack([basis(np.sin, odd), window[quarter] * np.sin(np.pi * odd / 2)[None]])

    groups = []
    for mels in np.array_split(np.arange(n_mels), min(MEL_GROUPS, n_mels)):
        rows = np.flatnonzero(filters[mels].any(axis=0))
        weights = filters[mels[0] : mels[-1] + 1, rows[0] : rows[-1] + 1].T
        groups.append(
            (
                slice(mels[0], mels[-1] + 1),
                slice(rows[0] - lo, rows[-1] + 1 - lo),
                np.ascontiguousarray(weights),
            )
        )

    def f32(array):
        return np.ascontiguousarray(array, dtype=np.float32)

    return _Plan(
        w=f32(window[n]),
        v=f32(window[2 * quarter - n]),
        cos_even=f32(cos_even),
        sin_even=f32(basis(np.sin, even)),
        cos_odd=f32(cos_odd),
        sin_odd=f32(sin_odd),
        n_bins=hi - lo,
        even=slice(even[0] - lo, None, 2),
        odd=slice(odd[0] - lo, None, 2),
        mel_groups=tuple(groups),
    )


def pad_or_trim(audio: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """Zero-pad or cut the last axis of ``audio`` to ``length`` samples (a view when nothing changes)."""
    audio = np.asarray(audio)
    size = audio.shape[-1]
    if size > length:
        return audio[..., :length]
    if size < length:
        widths = [(0, 0)] * (audio.ndim - 1) + [(0, length - size)]
        return np.pad(audio, widths)
    return audio


def log_mel_spectrogram(
    audio_batch: np.ndarray | Sequence[np.ndarray],
    n_mels: int = N_MELS,
    padding_to: int = N_SAMPLES,
    *,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Whisper log-mel features of a batch of 16 kHz clips: ``[B, n_mels, padding_to // hop_length]`` float32.

    ``audio_batch`` is a ``[B, samples]`` array or a sequence of 1-D arrays of any lengths; each clip is
    zero-padded or cut to ``padding_to`` samples first and normalised on its own (the 80 dB floor is per clip).
    """
    return _log_mel(_as_clips(audio_batch), n_mels, padding_to, n_fft, hop_length, sample_rate)


def _log_mel(
    clips: list[np.ndarray], n_mels: int, padding_to: int, n_fft: int, hop_length: int, sample_rate: int
) -> np.ndarray:
    """:func:`log_mel_spectrogram` of clips already validated by :func:`_as_clips`."""
    if padding_to <= n_fft // 2:
        raise ValueError(
            f"padding_to must exceed n_fft // 2 = {n_fft // 2} samples for reflect padding, got {padding_to}"
        )
    if not 0 < hop_length <= n_fft:
        raise ValueError(f"hop_length must be in 1..n_fft={n_fft}, got {hop_length}")
    plan = _fold_dft_plan(n_mels, n_fft, sample_rate)
    n_frames = padding_to // hop_length  # the STFT has one frame more; like Whisper, the last is dropped
    frames, active = _frames(clips, padding_to, n_fft, hop_length)

    result = np.empty((len(clips), n_mels, n_frames), np.float32)
    floor = np.log10(np.float32(LOG_FLOOR))
    work = _Workspace(plan, min(CHUNK_FRAMES, n_frames), n_mels)
    for i in range(len(clips)):
        for start in range(0, active[i], work.size):
            stop = min(start + work.size, active[i])
            result[i, :, start:stop] = work.log_mel(plan, frames[i, start:stop]).T
        result[i, :, active[i] :] = floor
        np.maximum(result[i], result[i].max() - np.float32(DYNAMIC_RANGE), out=result[i])
    result += 4.0
    result /= 4.0
    return result


def _frames(
    clips: list[np.ndarray], padding_to: int, n_fft: int, hop_length: int
) -> tuple[np.ndarray, list[int]]:
    """Frame views ``[B, frames, n_fft]`` of the padded, reflect-padded clips, and each clip's active frames.

    A clip's frames from ``active`` on lie wholly in its zero padding (the bound exceeds the frame count when
    the end reflection reaches back into the clip, so nothing is skipped then).
    """
    half = n_fft // 2
    n_frames = padding_to // hop_length
    padded = np.empty((len(clips), padding_to + 2 * half), np.float32)
    active = []
    for i, clip in enumerate(clips):
        size = min(clip.size, padding_to)
        padded[i, half : half + size] = clip[:size]
        padded[i, half + size : half + padding_to] = 0.0
        active.append(min(n_frames, math.ceil((half + size) / hop_length)))
    padded[:, :half] = padded[
        :, 2 * half : half : -1
    ]  # np.pad(mode="reflect"): the edge sample is not repeated
    padded[:, half + padding_to :] = padded[:, half + padding_to - 2 : padding_to - 2 : -1]
    return sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length][:, :n_frames], active


class _Workspace:
    """Buffers for one chunk of frames, reused across chunks so that they stay in cache."""

    def __init__(self, plan: _Plan, size: int, n_mels: int):
        q = plan.w.size
        self.size = size
        self.folded = np.empty((4, size, q), np.float32)  # P, R, S, T of _fold_dft_plan
        # Inputs of the four products (real/imaginary part of the even/odd bins), folded samples first.
        self.re_even_in = np.empty((size, plan.cos_even.shape[0]), np.float32)
        self.im_even_in = np.empty((size, plan.sin_even.shape[0]), np.float32)
        self.re_odd_in = np.empty((size, plan.cos_odd.shape[0]), np.float32)
        self.im_odd_in = np.empty((size, plan.sin_odd.shape[0]), np.float32)
        self.power = np.empty((size, plan.n_bins), np.float32)
        self.mel = np.empty((size, n_mels), np.float32)

    def log_mel(self, plan: _Plan, frames: np.ndarray) -> np.ndarray:
        """``log10(max(mel power, LOG_FLOOR))`` of ``frames`` ``[m, n_fft]`` as ``[m, n_mels]`` (a buffer view)."""
        m, n_fft = frames.shape
        q, quarter, half = plan.w.size, n_fft // 4, n_fft // 2
        p, r, s, t = (x[:m] for x in self.folded)
        head, tail = frames[:, 1 : q + 1], frames[:, n_fft - 1 : n_fft - 1 - q : -1]  # x[n], x[N-n]
        inner_lo, inner_hi = frames[:, half - 1 : half - 1 - q : -1], frames[:, half + 1 : half + 1 + q]
        np.add(head, tail, out=p)
        np.add(inner_lo, inner_hi, out=r)
        np.subtract(head, tail, out=s)
        np.subtract(inner_hi, inner_lo, out=t)
        p *= plan.w
        r *= plan.v
        s *= plan.w
        t *= plan.v
        even_re, even_im = self.re_even_in[:m], self.im_even_in[:m]
        odd_re, odd_im = self.re_odd_in[:m], self.im_odd_in[:m]
        np.add(p, r, out=even_re[:, :q])
        np.subtract(p, r, out=odd_re[:, :q])
        np.add(s, t, out=even_im)
        np.subtract(s, t, out=odd_im[:, :q])
        np.add(frames[:, quarter], frames[:, 3 * quarter], out=even_re[:, q])
        even_re[:, q + 1] = odd_re[:, q] = frames[:, half]
        np.subtract(frames[:, quarter], frames[:, 3 * quarter], out=odd_im[:, q])

        power = self.power[:m]
        for part, re, im, cos, sin in (
            (plan.even, even_re, even_im, plan.cos_even, plan.sin_even),
            (plan.odd, odd_re, odd_im, plan.cos_odd, plan.sin_odd),
        ):
            spectrum_re, spectrum_im = np.square(re @ cos), np.square(im @ sin)
            np.add(spectrum_re, spectrum_im, out=power[:, part])
        mel = self.mel[:m]
        for mels, bins, weights in plan.mel_groups:
            np.matmul(power[:, bins], weights, out=mel[:, mels])
        np.maximum(mel, LOG_FLOOR, out=mel)
        return np.log10(mel, out=mel)


def extract_features(
    audio: np.ndarray | Sequence[np.ndarray],
    sample_rate: int = SAMPLE_RATE,
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    *,
    chunk_length: int = CHUNK_LENGTH,
) -> np.ndarray:
    """Whisper encoder input for one clip (``[n_mels, frames]``) or a batch (``[B, n_mels, frames]``).

    ``audio`` is one 1-D waveform, a ``[B, samples]`` array, or a list of 1-D waveforms of any lengths, in
    [-1, 1] at ``sample_rate`` Hz. Audio at another rate than 16 kHz is resampled with
    :func:`whisper_triton.audio.resample` (soxr) first; nothing else (no normalisation, no trimming) is
    applied, so the result matches WhisperFeatureExtractor on the same 16 kHz samples. Every clip is padded
    or cut to ``chunk_length`` seconds, giving ``chunk_length * 100`` frames (3000).
    """
    single = isinstance(audio, np.ndarray) and audio.ndim == 1 or _is_flat_sequence(audio)
    clips = _as_clips([audio] if single else audio)
    if sample_rate != SAMPLE_RATE:
        clips = [resample(clip, sample_rate, SAMPLE_RATE) for clip in clips]
    features = _log_mel(clips, n_mels, chunk_length * SAMPLE_RATE, n_fft, hop_length, SAMPLE_RATE)
    return features[0] if single else features


def transcription_features(
    audio_batch: np.ndarray | Sequence[np.ndarray],
    n_mels: int = N_MELS,
    *,
    n_frames: int = N_SAMPLES // HOP_LENGTH,
) -> np.ndarray:
    """Encoder input for transcription: ``[B, n_mels, n_frames]``, the convention of openai/whisper.

    Each clip's log-mel is computed over the clip itself and then padded with zeros *in the normalised
    log-mel domain* up to ``n_frames`` (openai/whisper's and faster-whisper's ``pad_or_trim`` of the mel
    segment), instead of padding the audio with silence as ``extract_features`` (transformers) does.
    Transcripts then equal openai/whisper's and faster-whisper's, and on our test corpus they are also
    more accurate; every transcription path of this project (reference, ONNX, Triton, training) uses it.
    Clips longer than ``n_frames`` of audio are cut.
    """
    clips = [clip[: n_frames * HOP_LENGTH] for clip in _as_clips(audio_batch)]
    # openai/whisper pads the audio with 30 s of zeros before the STFT; frames inside the clip only see
    # up to N_FFT // 2 samples past its end, so N_FFT of padding gives the same values for them.
    longest = max(clip.size for clip in clips)
    mel = log_mel_spectrogram(clips, n_mels, padding_to=longest + N_FFT)
    features = np.zeros((len(clips), n_mels, n_frames), np.float32)
    for i, clip in enumerate(clips):
        content = min(clip.size // HOP_LENGTH, n_frames)  # openai: content_frames = samples // hop
        features[i, :, :content] = mel[i, :, :content]
    return features


def _is_flat_sequence(audio) -> bool:
    """A list/tuple of numbers is one waveform (as WhisperFeatureExtractor reads it), not a batch."""
    return isinstance(audio, (list, tuple)) and len(audio) > 0 and np.ndim(audio[0]) == 0


def _as_clips(audio_batch) -> list[np.ndarray]:
    """Validate a batch and return its clips as 1-D float32 arrays."""
    if isinstance(audio_batch, np.ndarray):
        if audio_batch.ndim != 2:
            raise ValueError(f"expected a [batch, samples] array, got shape {audio_batch.shape}")
        audio_batch = list(audio_batch)
    if not isinstance(audio_batch, (list, tuple)) or not audio_batch:
        raise ValueError("expected a non-empty batch: a [batch, samples] array or a list of 1-D arrays")
    clips = []
    for i, clip in enumerate(audio_batch):
        clip = np.asarray(clip)
        if clip.ndim != 1:
            raise ValueError(f"clip {i}: expected 1-D mono audio, got shape {clip.shape}")
        if clip.dtype.kind != "f" and clip.size:
            raise ValueError(
                f"clip {i}: expected float samples in [-1, 1], got dtype {clip.dtype}; "
                "convert PCM with whisper_triton.audio.preprocess_audio"
            )
        clip = clip.astype(np.float32, copy=False)
        # The sum is a cheap first test (NaN and Inf propagate); only a suspicious one is checked exactly.
        if not np.isfinite(clip.sum()) and not np.isfinite(clip).all():
            raise ValueError(f"clip {i}: contains NaN or infinite samples")
        clips.append(clip)
    return clips
