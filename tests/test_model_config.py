"""WhisperModelConfig: presets, overrides, validation, JSON round trip, transformers conversion."""

import json

import pytest

from training.model_config import ModelConfigError, WhisperModelConfig, preset_names


def test_tiny_en_preset_matches_the_released_checkpoint():
    config = WhisperModelConfig("tiny.en")
    assert config.use_multilingual is False
    assert (config.d_model, config.num_encoder_layers, config.num_decoder_layers) == (384, 4, 4)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (6, 6)
    assert (config.encoder_ffn_dim, config.decoder_ffn_dim) == (1536, 1536)
    assert config.vocab_size == 51864 and config.num_mel_bins == 80


@pytest.mark.parametrize(
    ("size", "d_model", "layers", "heads", "vocab", "mels"),
    [
        ("base", 512, 6, 8, 51865, 80),
        ("small.en", 768, 12, 12, 51864, 80),
        ("medium", 1024, 24, 16, 51865, 80),
        ("large-v2", 1280, 32, 20, 51865, 80),
        ("large-v3", 1280, 32, 20, 51866, 128),
    ],
)
def test_presets(size, d_model, layers, heads, vocab, mels):
    config = WhisperModelConfig(size)
    assert (config.d_model, config.num_encoder_layers, config.encoder_attention_heads) == (
        d_model,
        layers,
        heads,
    )
    assert config.encoder_ffn_dim == 4 * d_model
    assert (config.vocab_size, config.num_mel_bins) == (vocab, mels)


def test_overrides_replace_preset_values_and_ffn_follows_d_model():
    config = WhisperModelConfig(
        "tiny", num_encoder_layers=2, d_model=128, encoder_attention_heads=4, decoder_attention_heads=2
    )
    assert config.num_encoder_layers == 2 and config.num_decoder_layers == 4
    assert config.encoder_ffn_dim == 512 and config.d_model == 128
    assert config.use_multilingual is True  # no ".en": multilingual by default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(model_size="tiny", d_model=100), "divisible by encoder_attention_heads"),
        (dict(model_size="tiny", decoder_attention_heads=5), "divisible by decoder_attention_heads"),
        (dict(model_size="tiny", num_encoder_layers=0), "num_encoder_layers must be a positive integer"),
        (dict(model_size="tiny", d_model=-384), "d_model must be a positive integer"),
        (dict(model_size="huge"), "unknown model_size 'huge'"),
        (dict(model_size="large.en"), "unknown model_size 'large.en'"),
        (dict(model_size="tiny.en", use_multilingual=True), "English-only"),
    ],
)
def test_invalid_configs_raise_clear_errors(kwargs, message):
    with pytest.raises(ModelConfigError, match=message):
        WhisperModelConfig(**kwargs)


def test_json_round_trip(tmp_path):
    config = WhisperModelConfig("base.en", num_decoder_layers=2)
    path = config.save_to_json(tmp_path / "sub" / "model.json")
    assert json.loads(path.read_text())["num_decoder_layers"] == 2
    assert WhisperModelConfig.from_json(path) == config


def test_from_json_rejects_unknown_fields_and_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_size": "tiny", "n_layers": 3}))
    with pytest.raises(ModelConfigError, match="unknown WhisperModelConfig fields"):
        WhisperModelConfig.from_json(bad)
    bad.write_text("{not json")
    with pytest.raises(ModelConfigError, match="cannot read"):
        WhisperModelConfig.from_json(bad)


def test_to_whisper_config_and_back():
    config = WhisperModelConfig("tiny.en", num_decoder_layers=2)
    hf = config.to_whisper_config(dropout=0.2)
    assert (hf.d_model, hf.encoder_layers, hf.decoder_layers, hf.vocab_size) == (384, 4, 2, 51864)
    assert hf.max_source_positions == 1500 and hf.max_target_positions == 448
    assert hf.dropout == 0.2
    assert WhisperModelConfig.from_whisper_config(hf) == WhisperModelConfig(
        "tiny", use_multilingual=False, num_decoder_layers=2
    )


def test_preset_names_lists_english_variants():
    names = preset_names()
    assert "tiny.en" in names and "large-v3" in names and "large.en" not in names
