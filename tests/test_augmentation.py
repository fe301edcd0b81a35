"""Tests of training.augmentation on real signals: lengths, pitch, duration, noise level, determinism."""

import numpy as np
import pytest

pytest.importorskip("librosa", reason="augmentation needs the train extra (librosa)")

from training.augmentation import augment_audio  # noqa: E402
from whisper_triton.constants import SAMPLE_RATE  # noqa: E402


def sine(freq: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(audio: np.ndarray) -> float:
    """Frequency of the strongest spectral peak, to 1/8 of a bin (zero-padded FFT)."""
    n = 8 * audio.size
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size), n=n))
    return float(np.argmax(spectrum) * SAMPLE_RATE / n)


TONE = sine(440)


def test_nothing_asked_returns_an_equal_float32_copy():
    out = augment_audio(TONE, SAMPLE_RATE)
    np.testing.assert_array_equal(out, TONE)
    assert out.dtype == np.float32 and out is not TONE


@pytest.mark.parametrize("factor", [0.8, 1.25, 2.0, 1.1])
def test_time_stretch_length_and_pitch(factor):
    out = augment_audio(TONE, SAMPLE_RATE, time_stretch_factor=factor)
    assert out.size == round(TONE.size / factor)
    assert dominant_frequency(out) == pytest.approx(440, rel=0.01)  # speed changes, pitch does not


@pytest.mark.parametrize("steps", [3, -5, 12])
def test_pitch_shift_moves_frequency_by_the_semitone_ratio(steps):
    out = augment_audio(TONE, SAMPLE_RATE, pitch_shift_steps=steps)
    assert out.size == TONE.size
    assert dominant_frequency(out) == pytest.approx(440 * 2 ** (steps / 12), rel=0.01)


def test_noise_level_and_determinism():
    silence = np.zeros(4 * SAMPLE_RATE, np.float32)
    noisy = augment_audio(silence, SAMPLE_RATE, add_noise=True, noise_level=0.01, seed=7)
    assert noisy.size == silence.size
    assert noisy.std() == pytest.approx(0.01, rel=0.03)
    assert abs(noisy.mean()) < 0.001
    np.testing.assert_array_equal(
        noisy, augment_audio(silence, SAMPLE_RATE, add_noise=True, noise_level=0.01, seed=7)
    )
    assert not np.array_equal(
        noisy, augment_audio(silence, SAMPLE_RATE, add_noise=True, noise_level=0.01, seed=8)
    )
    rng = np.random.default_rng(7)  # a Generator continues its stream: the same first draw as seed=7
    np.testing.assert_array_equal(
        noisy, augment_audio(silence, SAMPLE_RATE, add_noise=True, noise_level=0.01, seed=rng)
    )


def test_noise_is_added_to_the_signal():
    out = augment_audio(TONE, SAMPLE_RATE, add_noise=True, seed=0)
    residual = out - TONE
    assert residual.std() == pytest.approx(0.005, rel=0.05)
    assert augment_audio(TONE, SAMPLE_RATE, add_noise=False, seed=0).tolist() == TONE.tolist()


def test_all_together_are_deterministic():
    kwargs = dict(time_stretch_factor=0.9, pitch_shift_steps=2, add_noise=True, noise_level=0.002, seed=3)
    first, second = augment_audio(TONE, SAMPLE_RATE, **kwargs), augment_audio(TONE, SAMPLE_RATE, **kwargs)
    np.testing.assert_array_equal(first, second)
    assert first.size == round(TONE.size / 0.9)
    assert dominant_frequency(first) == pytest.approx(440 * 2 ** (2 / 12), rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(time_stretch_factor=0), "time_stretch_factor must be > 0"),
        (dict(time_stretch_factor=-1.5), "time_stretch_factor must be > 0"),
        (dict(time_stretch_factor=float("nan")), "time_stretch_factor must be a finite number"),
        (dict(time_stretch_factor=float("inf")), "time_stretch_factor must be a finite number"),
        (dict(time_stretch_factor="fast"), "time_stretch_factor must be a finite number"),
        (dict(pitch_shift_steps=float("nan")), "pitch_shift_steps must be a finite number"),
        (dict(pitch_shift_steps=True), "pitch_shift_steps must be a finite number"),
        (dict(noise_level=-0.1), "noise_level must be >= 0"),
        (dict(add_noise="yes"), "add_noise must be True or False"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment_audio(TONE, SAMPLE_RATE, **kwargs)


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros(0, np.float32), SAMPLE_RATE, "empty audio"),
        (np.zeros((2, 100), np.float32), SAMPLE_RATE, "1-D mono audio"),
        (np.array([0.0, np.nan], np.float32), SAMPLE_RATE, "NaN or infinite"),
        (np.zeros(100, np.int16), SAMPLE_RATE, "float samples"),
        (TONE, 0, "sample_rate must be a positive integer"),
        (TONE, 16000.0, "sample_rate must be a positive integer"),
    ],
)
def test_bad_audio(audio, rate, message):
    with pytest.raises(ValueError, match=message):
        augment_audio(audio, rate)
