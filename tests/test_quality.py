"""Trustworthy transcripts: no text without speech, real recordings, long audio without lost sentences,
options honoured, and the guards' batched fallback; through the live server where it serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_serving import infer
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.decoding import Decoder
from whisper_triton.options import DecodingOptions
from whisper_triton.results import WindowResult
from whisper_triton.transcriber import Transcriber

DATA = Path(__file__).resolve().parent / "data"


def _tone(frequencies, seconds: float = 20.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (sum(np.sin(2 * np.pi * f * t) for f in frequencies) * 0.3 / len(frequencies)).astype(np.float32)


def _no_speech() -> dict[str, np.ndarray]:
    from whisper_triton.corpus import make_noise

    rng = np.random.default_rng(5)
    samples = 20 * SAMPLE_RATE
    return {
        "digital silence": np.zeros(samples, np.float32),
        "white noise": (0.1 * rng.standard_normal(samples)).astype(np.float32),
        "pink noise": (0.1 * make_noise("pink", samples, rng)).astype(np.float32),
        "440 Hz tone": _tone([440.0]),
        "C major chords": np.concatenate(
            [_tone([261.6, 329.6, 392.0], 5), _tone([349.2, 440.0, 523.3], 5)] * 2
        ),
        "0.1 s of silence": np.zeros(SAMPLE_RATE // 10, np.float32),
    }


NO_SPEECH = _no_speech()
MODES = {"greedy": {}, "beam 5": {"beam_size": 5}, "beam 5, timestamps": {"beam_size": 5, "timestamps": True}}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", sorted(NO_SPEECH))
def test_no_speech_gives_no_text(grpc_client, case, mode):
    """openai/whisper's well-known answers to no speech ("you", "Thank you.", "...see you in the next
    video!") never come back: Silero VAD finds no speech, so no window is decoded."""
    text, segments = infer(grpc_client, NO_SPEECH[case], MODES[mode])
    assert text == "" and segments == []


def test_speech_followed_by_a_minute_of_silence(grpc_client):
    from whisper_triton.audio import load_audio
    from whisper_triton.text import normalize_text

    speech = load_audio(DATA / "jfk.flac")
    padded = np.concatenate([speech, np.zeros(60 * SAMPLE_RATE, np.float32)])
    for options in ({}, {"beam_size": 5}):
        text, segments = infer(grpc_client, padded, options)
        assert "ask not what your country can do for you" in text.lower()
        assert segments and segments[-1]["end"] <= len(speech) / SAMPLE_RATE + 0.5, segments
        alone = infer(grpc_client, speech, {**options, "timestamps": True})[0]
        assert normalize_text(text) == normalize_text(alone)  # the window's end moved: punctuation may too


def test_switched_off_guards_show_what_they_prevent(grpc_client):
    """With the VAD gate and openai's guards switched off (null), silence gives tiny.en's hallucination:
    the options are honoured, and the empty answers above are the guards' doing."""
    off = {"speech_threshold": None, "no_speech_threshold": None, "logprob_threshold": None}
    assert infer(grpc_client, NO_SPEECH["digital silence"], off)[0] != ""
    assert infer(grpc_client, NO_SPEECH["digital silence"])[0] == ""


@pytest.fixture(scope="module")
def vad():
    from whisper_triton.vad import SileroVad

    return SileroVad()


@pytest.mark.parametrize(
    "name, max_wer", [("jfk", 0.05), ("telephone-conversation", 0.45)], ids=["jfk", "telephone"]
)
def test_real_recordings_equal_the_reference_and_match_what_was_said(
    grpc_client, tiny_en, vad, name, max_wer
):
    """Human speech (tests/data/README.md: sources and licences): the server gives exactly the PyTorch
    reference's transcript (same decoding, same VAD), and stays close to what was really said. The bounds
    are measured with margin: tiny.en 0% on JFK, 33% on the telephone call (crosstalk, 8 kHz band)."""
    from training.metrics import compute_wer
    from training.torch_backend import torch_transcriber
    from whisper_triton.audio import load_audio

    audio = load_audio(DATA / f"{name}.flac")
    truth = (DATA / f"{name}.txt").read_text().strip()
    reference = torch_transcriber(*tiny_en, vad=vad).transcribe(audio).text
    served, _ = infer(grpc_client, audio_bytes=(DATA / f"{name}.flac").read_bytes())
    assert served == reference
    assert compute_wer(served, truth) <= max_wer, served


@pytest.mark.slow
def test_long_audio_loses_no_sentence(grpc_client, corpus_entries):
    """Two minutes of sentences with short pauses (windows of many sentences each): every sentence is
    there, and the segments are ordered, inside the audio, never overlapping."""
    import jiwer

    from whisper_triton.corpus import concatenate_utterances
    from whisper_triton.text import normalize_text

    audio, _ = concatenate_utterances(corpus_entries, gap_seconds=0.3)
    text, segments = infer(grpc_client, audio)
    sentences = [normalize_text(entry["text"]).split() for entry in corpus_entries]
    alignment = jiwer.process_words(" ".join(w for s in sentences for w in s), normalize_text(text))
    deleted = np.zeros(sum(len(s) for s in sentences), dtype=bool)
    for chunk in alignment.alignments[0]:
        if chunk.type == "delete":
            deleted[chunk.ref_start_idx : chunk.ref_end_idx] = True
    bounds = np.cumsum([0] + [len(s) for s in sentences])
    lost = [
        " ".join(sentence)
        for sentence, start, end in zip(sentences, bounds, bounds[1:], strict=False)
        if deleted[start:end].mean() > 0.5
    ]
    assert not lost, lost
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(segments, segments[1:], strict=False)), segments
    assert all(0 <= s["start"] <= s["end"] <= len(audio) / SAMPLE_RATE + 1e-6 for s in segments)


def test_timestamps_false_is_honoured_for_long_audio(grpc_client, corpus_audio):
    """Audio over 30 s is decoded with timestamp tokens unless the client says timestamps: false, and
    then it is not: one untimed segment per window."""
    audio = np.concatenate([*corpus_audio[:14], np.zeros(SAMPLE_RATE, np.float32)])
    assert len(audio) > 30 * SAMPLE_RATE
    timed_text, timed = infer(grpc_client, audio)
    text, untimed = infer(grpc_client, audio, {"timestamps": False})
    assert len(timed) > len(untimed) >= 2 and text
    assert untimed[0]["start"] == 0.0 and untimed[0]["end"] == pytest.approx(untimed[1]["start"], abs=1e-3)


def test_vad_filter_decodes_only_the_speech(grpc_client, corpus_audio):
    """vad_filter: the minute of noise-free silence between two sentences is dropped, and the segment
    times still point into the original audio."""
    from training.metrics import compute_wer

    gap = np.zeros(60 * SAMPLE_RATE, np.float32)
    audio = np.concatenate([corpus_audio[0], gap, corpus_audio[1]])
    text, segments = infer(grpc_client, audio, {"vad_filter": True, "timestamps": True})
    first, second = (infer(grpc_client, a)[0] for a in corpus_audio[:2])
    # Each sentence is decoded with 0.4 s of padding around it (faster-whisper's speech_pad_ms), so a
    # word may come out differently than from the bare clip; the sentences are there, in order.
    assert compute_wer(text, f"{first} {second}") <= 0.1, (text, first, second)
    second_start = (len(corpus_audio[0]) + len(gap)) / SAMPLE_RATE
    assert (
        segments[-1]["start"] >= second_start - 0.5
        and segments[0]["end"] <= len(corpus_audio[0]) / SAMPLE_RATE + 0.5
    )


def test_options_are_checked_before_the_audio(grpc_client):
    """A bad option is reported even when the audio is bad too: options are checked first, so a request
    the model cannot serve costs no audio decoding."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="English-only"):
        infer(grpc_client, audio_bytes=b"not audio", options={"language": "de"})


# -- the guards, in-process ------------------------------------------------------------------------------


def _result(text: str, logprob: float = -0.2, no_speech: float = 0.01) -> WindowResult:
    return WindowResult(tokens=[1], text=text, avg_logprob=logprob, no_speech_prob=no_speech)


def test_fallback_redecodes_only_failing_windows_together(monkeypatch):
    """Window 0 loops (compression), window 1 is unlikely (log-prob), window 2 is fine, window 3 is
    silence: 1 and 0 are decoded again in one batch per temperature until they pass; 2 and 3 never."""
    import whisper_triton.guards as guards

    calls = []
    loop = "the the the the the the the the the the the the the the the the the the the the"

    def fake_decode(self, states, options, contexts, temperature, seed=None):
        calls.append((temperature, list(states)))
        answers = {
            0.0: {0: _result(loop), 1: _result("hm", -2.5), 2: _result("fine"), 3: _result("you", -1.5, 0.9)},
            0.2: {0: _result(loop), 1: _result("better words here")},
            0.4: {0: _result("the cat sat on the mat")},
        }
        return [answers[temperature][int(w)] for w in states]

    monkeypatch.setattr(Decoder, "decode", fake_decode)
    decoder = Decoder(None, None, None)  # decode is replaced: no backend, model or tokenizer
    states = np.arange(4)
    results = decoder.decode_with_fallback(states, DecodingOptions())
    assert [call[0] for call in calls] == [0.0, 0.2, 0.4]
    assert [call[1] for call in calls] == [[0, 1, 2, 3], [0, 1], [0]]
    assert [r.text for r in results] == ["the cat sat on the mat", "better words here", "fine", "you"]
    assert guards.is_silence(results[3], DecodingOptions())
    calls.clear()
    off = DecodingOptions(temperature_increment_on_fallback=None)
    decoder.decode_with_fallback(states, off)
    assert [call[0] for call in calls] == [0.0]


def test_temperature_schedule_and_compression_ratio():
    from whisper_triton.guards import compression_ratio

    assert DecodingOptions().temperatures() == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert DecodingOptions(temperature=0.5, temperature_increment_on_fallback=0.25).temperatures() == [
        0.5,
        0.75,
        1.0,
    ]
    assert DecodingOptions(temperature_increment_on_fallback=None).temperatures() == [0.0]
    assert compression_ratio("And so my fellow Americans, ask not what your country can do for you.") < 2.0
    assert compression_ratio("Thank you. " * 30) > 2.4


def test_decoder_row_budget_changes_nothing_but_the_batches(tiny_en, corpus_audio, vad):
    """Decoding in batches of at most 5 rows (windows x beams) gives the transcripts of one batch."""
    from training.torch_backend import torch_transcriber

    reference = torch_transcriber(*tiny_en, vad=vad)
    audio = np.concatenate(corpus_audio[:14])
    options = DecodingOptions(beam_size=2)
    whole = reference.transcribe(audio, options)
    bounded = Transcriber(reference.encoder, reference.decoder, vad, max_rows=5)
    chunked = bounded.transcribe(audio, options)
    assert chunked.text == whole.text and len(whole.segments) > 2
