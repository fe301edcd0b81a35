"""Parity of whisper_triton.features with transformers' WhisperFeatureExtractor and librosa's mel filters."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from transformers import WhisperFeatureExtractor

from whisper_triton.audio import load_audio, resample
from whisper_triton.constants import N_FRAMES, N_MELS, N_SAMPLES, SAMPLE_RATE
from whisper_triton.features import (
    LOG_FLOOR,
    FeatureConfig,
    extract_features,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
)

ATOL = 1e-4  # the tolerance transformers' own feature tests use for golden values
FLOOR_VALUE = (np.log10(LOG_FLOOR) + 4) / 4  # a fully clamped (digitally silent) mel value after scaling


@pytest.fixture(scope="module")
def reference():
    return WhisperFeatureExtractor(feature_size=N_MELS)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """Seven seconds of real synthesised speech (espeak-ng writes 22.05 kHz; load_audio resamples)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng binary is needed to synthesise speech")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog. Whisper turns speech into text, thirty seconds at a time."
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return load_audio(path)


def noise_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    cases = {
        "uniform 30 s": rng.uniform(-1, 1, N_SAMPLES),
        "short 1 s": rng.normal(0, 0.1, SAMPLE_RATE),
        "long 35 s (truncated)": rng.normal(0, 0.1, 35 * SAMPLE_RATE),
        "exactly 30 s": rng.normal(0, 0.1, N_SAMPLES),
        "30 s less 100 samples": rng.normal(0, 0.1, N_SAMPLES - 100),  # the end reflection reaches the signal
    }
    # From full scale down to levels where the 1e-10 log floor clamps part (1e-5) or most (3e-6, 1e-6) of it.
    for amplitude in (1.0, 1e-2, 1e-4, 1e-5, 3e-6, 1e-6):
        cases[f"white {amplitude:g}"] = rng.standard_normal(N_SAMPLES) * amplitude
    return {name: audio.astype(np.float32) for name, audio in cases.items()}


NOISE = noise_cases()


def reference_features(extractor, audio):
    return extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("name", list(NOISE))
def test_parity_on_noise(reference, name):
    audio = NOISE[name]
    ours = extract_features(audio)
    assert ours.shape == (N_MELS, N_FRAMES) and ours.dtype == np.float32
    assert max_diff(ours, reference_features(reference, audio)[0]) <= ATOL


def test_quiet_cases_exercise_the_log_floor(reference):
    # The premise of the quiet parity cases: the reference really clamps there (and not everywhere).
    floored = np.isclose(reference_features(reference, NOISE["white 1e-05"]), FLOOR_VALUE, atol=1e-6).mean()
    assert 0.01 < floored < 0.99


def test_parity_on_speech(reference, speech):
    assert 5 * SAMPLE_RATE < speech.size < 10 * SAMPLE_RATE
    ours = extract_features(speech)
    assert max_diff(ours, reference_features(reference, speech)[0]) <= ATOL
    quiet = speech * np.float32(1e-3)  # -60 dB: the 80 dB window now reaches the log floor
    assert max_diff(extract_features(quiet), reference_features(reference, quiet)[0]) <= ATOL


def test_batch_of_mixed_lengths_equals_items(reference, speech):
    clips = [
        speech,
        NOISE["short 1 s"],
        NOISE["long 35 s (truncated)"],
        np.zeros(0, np.float32),
        NOISE["white 1e-05"],
    ]
    batch = extract_features(clips)
    assert batch.shape == (len(clips), N_MELS, N_FRAMES)
    for clip, features in zip(clips, batch, strict=True):
        np.testing.assert_array_equal(features, extract_features(clip))
    assert max_diff(batch, reference_features(reference, clips)) <= ATOL


def test_array_batch_and_lists(reference):
    stacked = np.stack([NOISE["uniform 30 s"], NOISE["white 0.01"]])
    np.testing.assert_array_equal(extract_features(stacked), log_mel_spectrogram(stacked))
    as_list = extract_features(NOISE["short 1 s"].tolist())  # a list of floats is one waveform
    np.testing.assert_array_equal(as_list, extract_features(NOISE["short 1 s"]))


def test_mel_filters_equal_librosa():
    librosa = pytest.importorskip("librosa")
    for n_mels in (80, 128):
        ours = mel_filters(n_mels)
        expected = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=400, n_mels=n_mels)
        assert ours.shape == expected.shape == (n_mels, 201)
        assert max_diff(ours, expected) <= 1e-6
    assert mel_filters() is mel_filters()  # computed once
    assert not mel_filters().flags.writeable


def test_128_mels_match_large_v3_extractor(speech):
    config = FeatureConfig.from_preprocessor_config({"feature_size": 128})
    reference = WhisperFeatureExtractor(feature_size=128)
    for audio in (speech, NOISE["uniform 30 s"], NOISE["white 1e-05"]):
        ours = config.extract(audio)
        assert ours.shape == (128, N_FRAMES)
        assert max_diff(ours, reference_features(reference, audio)[0]) <= ATOL


def test_other_padding_length_matches_a_shorter_chunk():
    reference = WhisperFeatureExtractor(chunk_length=1)  # 16000 samples, 100 frames
    audio = NOISE["short 1 s"][:12000]
    ours = log_mel_spectrogram([audio], padding_to=SAMPLE_RATE)
    assert ours.shape == (1, N_MELS, 100)
    assert max_diff(ours, reference_features(reference, audio)) <= ATOL


def test_other_sample_rates_are_resampled():
    audio_8k = NOISE["short 1 s"][:8000]
    expected = extract_features(resample(audio_8k, 8000, SAMPLE_RATE))
    np.testing.assert_array_equal(extract_features(audio_8k, sample_rate=8000), expected)


def test_invalid_input_is_rejected():
    with pytest.raises(ValueError, match="clip 1: contains NaN"):
        extract_features([np.zeros(10, np.float32), np.array([0.0, np.nan], np.float32)])
    with pytest.raises(ValueError, match="dtype int16"):
        extract_features(np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="non-empty batch"):
        extract_features([])
    with pytest.raises(ValueError, match=r"expected a \[batch, samples\] array"):
        log_mel_spectrogram(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of 4"):
        extract_features(np.zeros(100, np.float32), n_fft=402)


def test_pad_or_trim():
    audio = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_trim(audio, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(pad_or_trim(audio, 12), list(range(10)) + [0, 0])
    assert pad_or_trim(audio, 10) is audio
    assert pad_or_trim(np.ones((2, 3)), 5).shape == (2, 5)


def test_feature_config_from_dict_file_and_folder(tmp_path):
    assert FeatureConfig.from_preprocessor_config({}) == FeatureConfig()
    config = {
        "feature_size": 128,
        "n_fft": 400,
        "hop_length": 160,
        "sampling_rate": 16000,
        "chunk_length": 30,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "feature_extractor_type": "WhisperFeatureExtractor",
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    from_file = FeatureConfig.from_preprocessor_config(tmp_path / "preprocessor_config.json")
    assert from_file == FeatureConfig.from_preprocessor_config(tmp_path) == FeatureConfig(n_mels=128)
    assert from_file.n_samples == N_SAMPLES and from_file.n_frames == N_FRAMES
    assert FeatureConfig.from_preprocessor_config(from_file.to_preprocessor_dict()) == from_file


def test_feature_config_rejects_inconsistent_values(tmp_path):
    with pytest.raises(ValueError, match="n_samples is 160000, but the other keys imply 480000"):
        FeatureConfig.from_preprocessor_config({"n_samples": 160000})
    with pytest.raises(ValueError, match="sample_rate must be 16000"):
        FeatureConfig.from_preprocessor_config({"sampling_rate": 8000})
    with pytest.raises(ValueError, match="n_mels must be a positive integer"):
        FeatureConfig(n_mels=0)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"hop_length": "160"}))
    with pytest.raises(ValueError, match=r"preprocessor_config.json: FeatureConfig.hop_length"):
        FeatureConfig.from_preprocessor_config(tmp_path)


def test_transcription_features_equal_faster_whisper(corpus_audio):
    """The openai/faster-whisper convention: log-mel of the clip, zero-padded in the log-mel domain."""
    from faster_whisper.audio import pad_or_trim as pad_mel
    from faster_whisper.feature_extractor import FeatureExtractor

    from whisper_triton.features import transcription_features

    reference_extractor = FeatureExtractor(feature_size=80)
    clips = corpus_audio[:4]
    ours = transcription_features(clips)
    assert ours.shape == (4, 80, 3000)
    for clip, mine in zip(clips, ours, strict=True):
        theirs = reference_extractor(clip)
        # faster-whisper's transcribe: drop the frame made of padding, then pad the mel with zeros.
        theirs = pad_mel(theirs[:, : theirs.shape[-1] - 1])
        np.testing.assert_allclose(mine, theirs, atol=1e-4, rtol=0)
        content = clip.size // 160
        assert np.all(mine[:, content:] == 0.0) and np.any(mine[:, :content] != 0.0)
