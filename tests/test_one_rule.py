"""One source for each rule and constant, and options honoured at their boundary values.

Each test here guards a rule that used to be written twice (and had drifted), or an option whose legal
boundary value was once silently replaced by a default (``speech_threshold: 0`` became 0.5).
"""

from __future__ import annotations

import numpy as np
import pytest

from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.options import DecodingOptions, OptionsError
from whisper_triton.vad import FRAME


class _ConstantVad:
    """A VAD that scores every frame alike (0: sure silence)."""

    def __init__(self, probability: float):
        self.probability = probability

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        return np.full(-(-len(audio) // FRAME), self.probability, dtype=np.float32)


def _noise(seconds: float) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE)) * 0.01).astype(np.float32)


@pytest.mark.parametrize(
    "threshold, has_speech", [(0.0, True), (0.5, False), (None, True)], ids=["zero", "default", "null"]
)
def test_speech_threshold_zero_is_honoured_by_the_server_windows(threshold, has_speech):
    """0 is a legal threshold (every frame scores at least 0: every window is decoded); null switches the
    check off; only a threshold above the VAD's scores finds no speech."""
    from whisper_triton.transcriber import prepare_windows

    audio = _noise(45.0)  # two windows
    options = DecodingOptions(speech_threshold=threshold, timestamps=True)
    _, windows = prepare_windows(audio, 80, options, _ConstantVad(0.0))
    assert len(windows) == 2
    assert windows.has_speech.tolist() == [has_speech] * 2
    if has_speech:
        np.testing.assert_array_equal(windows.speech_end, windows.end)
    else:
        np.testing.assert_array_equal(windows.speech_end, windows.start)


@pytest.mark.parametrize(
    "threshold, decoded", [(0.0, 3), (0.5, 0), (None, 3)], ids=["zero", "default", "null"]
)
def test_speech_threshold_zero_is_honoured_by_transcribe_batch(monkeypatch, threshold, decoded):
    from whisper_triton.decoding import Decoder
    from whisper_triton.results import WindowResult
    from whisper_triton.transcriber import Transcriber

    seen = []

    def decode_with_fallback(self, states, options, contexts=None):
        seen.extend(contexts)
        return [WindowResult([], "", -0.1, 0.0) for _ in contexts]

    monkeypatch.setattr(Decoder, "decode_with_fallback", decode_with_fallback)
    manifest = type("Manifest", (), {"n_mels": 80, "is_multilingual": False})()
    transcriber = Transcriber(lambda features: features, Decoder(None, manifest, None), _ConstantVad(0.0))
    transcriber.transcribe_batch([_noise(2.0)] * 3, DecodingOptions(speech_threshold=threshold))
    assert len(seen) == decoded


def test_hub_offline_reads_hf_hub_offline_as_huggingface_hub_does(monkeypatch):
    """One reading of HF_HUB_OFFLINE for model loading and data loading, huggingface_hub's own."""
    import training.data
    import training.modeling
    from whisper_triton.paths import hub_offline

    assert training.data.hub_offline is hub_offline and training.modeling.hub_offline is hub_offline
    for value, offline in [("1", True), ("yes", True), ("TRUE", True), ("on", True), ("0", False), ("no", False),
                           ("false", False), ("", False)]:  # fmt: skip
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub_offline() is offline, value
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub_offline() is False


def test_build_defaults_are_the_servers_limits():
    from whisper_triton.build.triton_config import ServingSettings
    from whisper_triton.serving import DEFAULT_LIMITS, Limits

    settings = ServingSettings()
    assert (settings.max_audio_seconds, settings.max_audio_bytes) == (
        Limits().max_seconds,
        Limits().max_bytes,
    )
    assert DEFAULT_LIMITS == Limits()


def test_onnx_file_names_have_one_source():
    from whisper_triton import onnx_runtime
    from whisper_triton.build import onnx_export

    for name in ("ENCODER_FILE", "CROSS_KV_FILE", "DECODER_FILE"):
        assert getattr(onnx_export, name) is getattr(onnx_runtime, name)


def test_english_only_rule_is_one_rule(tiny_en):
    """The feature model's early check and the decoder's prompt refuse with the same message."""
    from training.torch_backend import torch_decoder
    from whisper_triton.serving import check_for_model

    decoder = torch_decoder(*tiny_en)
    for options in (DecodingOptions(language="de"), DecodingOptions(task="translate")):
        with pytest.raises(OptionsError) as early:
            check_for_model(options, decoder.manifest, decoder.tokenizer, has_vad=True)
        with pytest.raises(OptionsError) as late:
            decoder.prompt(options)
        assert str(early.value) == str(late.value) and "English-only" in str(early.value)


def test_max_initial_timestamp_index_zero_is_kept(tiny_en):
    import copy

    from whisper_triton.manifest import manifest_from_model

    model, processor = tiny_en
    model = copy.copy(model)
    model.generation_config = copy.deepcopy(model.generation_config)
    model.generation_config.max_initial_timestamp_index = 0
    assert manifest_from_model(model, processor).max_initial_timestamp_index == 0
    model.generation_config.max_initial_timestamp_index = None
    assert manifest_from_model(model, processor).max_initial_timestamp_index == 50  # openai/whisper's 1 s
