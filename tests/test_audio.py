"""Tests of whisper_triton.audio: real files in several formats, real decoders, measured signal properties."""

import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from whisper_triton.audio import (
    NORMALIZE_PEAK,
    AudioError,
    load_audio,
    preprocess_audio,
    strip_silence,
    to_mono,
)
from whisper_triton.constants import SAMPLE_RATE

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="the ffmpeg binary is needed to encode mp3/m4a test files"
)


def sine(freq: float, seconds: float, rate: int = SAMPLE_RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Frequency of the strongest spectral peak, to 1/8 of a bin (zero-padded FFT)."""
    n = 8 * audio.size
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size), n=n))
    return float(np.argmax(spectrum) * rate / n)


def encode(tmp_path, audio: np.ndarray, suffix: str, *args: str):
    """Encode 16 kHz audio with the ffmpeg binary (the way users' mp3/m4a files are made)."""
    wav = tmp_path / "source.wav"
    sf.write(wav, audio, SAMPLE_RATE)
    out = tmp_path / f"encoded{suffix}"
    subprocess.run([FFMPEG, "-y", "-loglevel", "error", "-i", str(wav), *args, str(out)], check=True)
    return out


@pytest.mark.parametrize(
    ("suffix", "subtype", "atol"),
    [
        (".wav", "FLOAT", 0.0),  # float WAV is lossless
        (".wav", "PCM_16", 1 / 32768),  # one 16-bit step
        (".flac", "PCM_16", 1 / 32768),
    ],
)
def test_lossless_formats_round_trip(tmp_path, suffix, subtype, atol):
    audio = sine(440, 0.5)
    path = tmp_path / f"a{suffix}"
    sf.write(path, audio, SAMPLE_RATE, subtype=subtype)
    loaded = load_audio(path)
    assert loaded.dtype == np.float32 and loaded.shape == audio.shape
    np.testing.assert_allclose(loaded, audio, rtol=0, atol=atol)


def test_ogg_vorbis_keeps_length_and_pitch(tmp_path):
    audio = sine(440, 1.0)
    sf.write(tmp_path / "a.ogg", audio, SAMPLE_RATE, format="OGG", subtype="VORBIS")
    loaded = load_audio(str(tmp_path / "a.ogg"))  # a str path works like a Path
    assert loaded.size == audio.size
    assert dominant_frequency(loaded) == pytest.approx(440, abs=1)
    assert np.corrcoef(loaded, audio)[0, 1] > 0.99


@needs_ffmpeg
def test_mp3_from_ffmpeg(tmp_path):
    audio = sine(440, 1.0)
    loaded = load_audio(encode(tmp_path, audio, ".mp3"))
    assert abs(loaded.size - audio.size) < 0.1 * SAMPLE_RATE  # mp3 frames add encoder delay and padding
    assert dominant_frequency(loaded) == pytest.approx(440, abs=1)
    assert np.sqrt(np.mean(loaded**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@needs_ffmpeg
def test_m4a_goes_through_pyav_from_path_and_bytes(tmp_path):
    audio = sine(1000, 1.0)
    path = encode(tmp_path, audio, ".m4a", "-c:a", "aac", "-b:a", "96k")
    with pytest.raises(sf.LibsndfileError):
        sf.read(path)  # the premise: libsndfile cannot read AAC, so load_audio must fall back to PyAV
    from_path = load_audio(path)
    from_bytes = load_audio(path.read_bytes())
    np.testing.assert_array_equal(from_path, from_bytes)
    assert abs(from_path.size - audio.size) < 0.1 * SAMPLE_RATE
    assert dominant_frequency(from_path) == pytest.approx(1000, abs=1)


def test_bytes_input_equals_file_input(tmp_path):
    audio = sine(300, 0.25)
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    sf.write(tmp_path / "a.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(buffer.getvalue()), load_audio(tmp_path / "a.wav"))
    np.testing.assert_array_equal(load_audio(bytearray(buffer.getvalue())), audio)


def test_stereo_file_is_averaged(tmp_path):
    left, right = sine(440, 0.25), sine(440, 0.25, amplitude=0.1)
    sf.write(tmp_path / "s.wav", np.stack([left, -right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav"), (left - right) / 2, atol=1e-7)


def test_44k_file_is_resampled_to_16k_keeping_frequency(tmp_path):
    rate = 44100
    sf.write(tmp_path / "cd.wav", sine(1000, 1.0, rate=rate), rate, subtype="PCM_16")
    loaded = load_audio(tmp_path / "cd.wav")
    assert loaded.size == SAMPLE_RATE
    assert dominant_frequency(loaded) == pytest.approx(1000, abs=0.5)
    # Away from the edges (filter transients) the level is unchanged: the passband is flat.
    assert np.abs(loaded[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_other_target_rate(tmp_path):
    sf.write(tmp_path / "a.wav", sine(440, 1.0), SAMPLE_RATE)
    assert load_audio(tmp_path / "a.wav", sample_rate=8000).size == 8000


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="nope.wav: no such file"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty.wav: file is empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="no data"):
        load_audio(b"")


def test_zero_length_audio(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="silent.wav: contains no audio samples"):
        load_audio(tmp_path / "silent.wav")


def test_garbage_bytes_and_corrupt_file(tmp_path):
    garbage = b"this is not audio, just text pretending to be a file. " * 40
    with pytest.raises(AudioError, match=r"<2160 bytes of audio>: cannot decode audio"):
        load_audio(garbage)
    (tmp_path / "fake.mp3").write_bytes(garbage)
    with pytest.raises(AudioError, match=r"fake.mp3: cannot decode audio \(soundfile: .*; FFmpeg: .*\)"):
        load_audio(tmp_path / "fake.mp3")


def test_truncated_wav(tmp_path):
    buffer = io.BytesIO()
    sf.write(buffer, sine(440, 0.1), SAMPLE_RATE, format="WAV")
    (tmp_path / "cut.wav").write_bytes(buffer.getvalue()[:30])  # the header is 44 bytes
    with pytest.raises(AudioError, match="cut.wav"):
        load_audio(tmp_path / "cut.wav")


def test_nan_samples(tmp_path):
    audio = sine(440, 0.1)
    audio[[5, 50]] = [np.nan, np.inf]
    sf.write(tmp_path / "nan.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: 2 of 1600 samples are NaN or infinite"):
        load_audio(tmp_path / "nan.wav")


def test_preprocess_normalises_peak_and_resamples():
    audio = sine(440, 1.0, rate=8000, amplitude=0.2)
    out = preprocess_audio(audio, 8000)
    assert out.dtype == np.float32 and out.size == SAMPLE_RATE
    assert np.abs(out).max() == pytest.approx(NORMALIZE_PEAK, abs=1e-6)
    assert dominant_frequency(out) == pytest.approx(440, abs=0.5)
    assert np.abs(audio).max() == pytest.approx(0.2, abs=1e-6)  # the input is untouched

    quiet = preprocess_audio(sine(440, 0.1, amplitude=0.01), SAMPLE_RATE, normalize=False)
    assert np.abs(quiet).max() == pytest.approx(0.01, abs=1e-6)
    assert np.abs(preprocess_audio(audio, 8000, peak=0.5)).max() == pytest.approx(0.5, abs=1e-6)


def test_preprocess_leaves_silence_alone():
    zeros = np.zeros(1600, np.float32)
    np.testing.assert_array_equal(preprocess_audio(zeros, SAMPLE_RATE, trim_silence=True), zeros)


def test_preprocess_mixes_channels_in_either_layout():
    left, right = sine(440, 0.1), sine(660, 0.1)
    expected = preprocess_audio((left + right) / 2, SAMPLE_RATE, normalize=False)
    channels_first = np.stack([left, right])
    np.testing.assert_allclose(
        preprocess_audio(channels_first, SAMPLE_RATE, normalize=False), expected, atol=1e-7
    )
    np.testing.assert_allclose(
        preprocess_audio(channels_first.T, SAMPLE_RATE, normalize=False), expected, atol=1e-7
    )
    with pytest.raises(AudioError, match="ambiguous channel layout"):
        to_mono(np.zeros((4, 4), np.float32))
    with pytest.raises(AudioError, match="batch"):
        to_mono(np.zeros((40, 16000), np.float32))


def test_preprocess_scales_integer_pcm():
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(
        preprocess_audio(pcm, SAMPLE_RATE, normalize=False), [0, 0.5, -1, 32767 / 32768]
    )
    np.testing.assert_allclose(to_mono(np.array([128, 192, 0], np.uint8)), [0, 0.5, -1])


def test_preprocess_rejects_bad_audio():
    with pytest.raises(AudioError, match="contains no audio samples"):
        preprocess_audio(np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="1 of 3 samples are NaN"):
        preprocess_audio(np.array([0.0, np.nan, 0.1]), SAMPLE_RATE)
    with pytest.raises(AudioError, match="expected 1-D or 2-D"):
        preprocess_audio(np.zeros((2, 2, 100)), SAMPLE_RATE)
    with pytest.raises(AudioError, match="dtype complex"):
        preprocess_audio(np.zeros(10, np.complex64), SAMPLE_RATE)
    with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
        preprocess_audio(np.zeros(10), 0)


def test_trim_removes_leading_and_trailing_silence_only():
    rate = SAMPLE_RATE
    tone = sine(440, 1.0)
    rng = np.random.default_rng(0)
    hiss = lambda seconds: (rng.standard_normal(int(seconds * rate)) * 1e-5).astype(np.float32)  # noqa: E731
    gap = np.zeros(rate // 4, np.float32)
    audio = np.concatenate([hiss(0.5), tone, gap, tone, hiss(0.7)])  # hiss is ~90 dB below the tone

    trimmed = preprocess_audio(audio, rate, normalize=False, trim_silence=True)
    kept = 2 * tone.size + gap.size
    assert kept <= trimmed.size <= kept + 2 * 400  # at most one 25 ms frame of quiet on each side
    assert np.abs(trimmed[:400]).max() > 0.1 and np.abs(trimmed[-400:]).max() > 0.1
    assert np.count_nonzero(trimmed == 0) >= gap.size  # the pause inside is kept

    # With a 100 dB threshold the hiss counts as sound and nothing is cut.
    assert strip_silence(audio, top_db=100).size == audio.size


def test_trim_then_normalise():
    audio = np.concatenate(
        [np.zeros(8000, np.float32), sine(440, 0.5, amplitude=0.1), np.zeros(8000, np.float32)]
    )
    out = preprocess_audio(audio, SAMPLE_RATE, trim_silence=True)
    assert out.size <= 8000 + 800
    assert np.abs(out).max() == pytest.approx(NORMALIZE_PEAK, abs=1e-6)
