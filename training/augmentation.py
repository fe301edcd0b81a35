"""Waveform augmentation for fine-tuning: time stretch, pitch shift and additive Gaussian noise.

Training-only (librosa is a ``train`` extra, never imported by the server or client). The result is
float32; all randomness comes from ``seed`` so that an epoch can be replayed exactly.

Lengths: pitch shift and noise keep the length exactly; time stretch by ``factor`` returns
``round(len(audio) / factor)`` samples exactly (librosa trims or zero-pads the phase vocoder's output to that
length), so a factor above 1 speeds speech up and shortens it.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

DEFAULT_NOISE_LEVEL = 0.005  # noise RMS relative to full scale: about -46 dBFS, under speech at -20..-30 dBFS


def augment_audio(
    audio: np.ndarray,
    sample_rate: int,
    time_stretch_factor: float | None = None,
    pitch_shift_steps: float | None = None,
    add_noise: bool = False,
    noise_level: float = DEFAULT_NOISE_LEVEL,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Return an augmented copy of 1-D ``audio`` sampled at ``sample_rate`` Hz.

    Applied in this order, each only when asked for:

    - ``time_stretch_factor`` (> 0): speed change without a pitch change (phase vocoder);
      2.0 is twice as fast (half the samples), 0.5 twice as slow.
    - ``pitch_shift_steps``: pitch change in semitones (12 = one octave up, negative = down) at constant
      duration.
    - ``add_noise``: white Gaussian noise of RMS ``noise_level`` (absolute, in full-scale units, so 0.005 is
      about -46 dBFS whatever the signal's level), drawn from ``np.random.default_rng(seed)``; a Generator
      may be passed as ``seed`` to continue a stream.

    Raises ValueError for empty, non-1-D or non-finite audio and for out-of-range arguments.
    """
    audio = _check_audio(audio)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    if time_stretch_factor is not None:
        _check_real("time_stretch_factor", time_stretch_factor)
        if time_stretch_factor <= 0:
            raise ValueError(
                f"time_stretch_factor must be > 0 (2.0 = twice as fast), got {time_stretch_factor}"
            )
    if pitch_shift_steps is not None:
        _check_real("pitch_shift_steps", pitch_shift_steps)
    if not isinstance(add_noise, (bool, np.bool_)):
        raise ValueError(f"add_noise must be True or False, got {add_noise!r}")
    _check_real("noise_level", noise_level)
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0 (noise RMS in full-scale units), got {noise_level}")

    if time_stretch_factor is not None and time_stretch_factor != 1.0:
        audio = _librosa().effects.time_stretch(audio, rate=float(time_stretch_factor))
    if pitch_shift_steps is not None and pitch_shift_steps != 0:
        audio = _librosa().effects.pitch_shift(audio, sr=int(sample_rate), n_steps=float(pitch_shift_steps))
    if add_noise and noise_level > 0:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        audio = audio + rng.normal(0.0, noise_level, audio.shape)
    return np.asarray(audio, dtype=np.float32)


def _librosa():
    # Imported on first use: librosa loads scipy and numba (seconds), which noise-only augmentation never needs.
    import librosa

    return librosa


def _check_audio(audio) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"augment_audio expects 1-D mono audio, got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("augment_audio got empty audio")
    if audio.dtype.kind != "f":
        raise ValueError(f"augment_audio expects float samples in [-1, 1], got dtype {audio.dtype}")
    if not np.isfinite(audio).all():
        raise ValueError("augment_audio got NaN or infinite samples")
    return audio.astype(np.float32)  # a copy: the caller's array is never modified


def _check_real(name: str, value) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
