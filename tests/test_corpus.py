"""Tests of the synthetic speech corpus: real synthesis with Piper and espeak-ng, small corpora."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_triton import corpus
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.corpus import (
    concatenate_utterances,
    librispeech_transcript,
    plan_corpus,
    read_manifest,
    synthesize_corpus,
)
from whisper_triton.sentences import SENTENCES

NUM = 6  # enough for both engines and several voices, small enough to synthesise in about a second
SEED = 3
MANIFEST_KEYS = {"id", "audio_filepath", "text", "duration", "engine", "voice", "speed", "snr_db", "noise"}


@pytest.fixture(scope="module")
def clean_manifest(tmp_path_factory) -> Path:
    return synthesize_corpus(tmp_path_factory.mktemp("clean"), num_utterances=NUM, seed=SEED)


def _audio(entry: dict) -> np.ndarray:
    audio, sample_rate = sf.read(entry["audio_filepath"], dtype="float64")
    assert sample_rate == SAMPLE_RATE
    return audio


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_sentences_are_ours_and_varied():
    assert len(SENTENCES) >= 150
    assert len(set(SENTENCES)) == len(SENTENCES)
    assert all(5 <= len(s.split()) <= 20 for s in SENTENCES)
    assert sum(s.endswith("?") for s in SENTENCES) >= 20


def test_layout_and_manifest(clean_manifest):
    root = clean_manifest.parent
    assert clean_manifest == root / "manifest.jsonl"
    raw = [json.loads(line) for line in clean_manifest.read_text().splitlines()]
    entries = read_manifest(clean_manifest)
    assert len(entries) == NUM
    assert {e["engine"] for e in entries} == {"piper", "espeak"}
    speaker_voice, chapter_speed = {}, {}
    for line, entry in zip(raw, entries, strict=True):
        assert set(entry) == MANIFEST_KEYS
        speaker, chapter, _ = entry["id"].split("-")
        assert re.fullmatch(r"\d+-\d+-\d{4}", entry["id"])
        assert line["audio_filepath"] == f"{speaker}/{chapter}/{entry['id']}.flac"  # relative to the corpus
        assert Path(entry["audio_filepath"]) == (root / line["audio_filepath"]).resolve()
        assert entry["text"] in SENTENCES
        assert entry["snr_db"] is None and entry["noise"] is None
        # One speaker per engine and voice; one chapter per speaking rate of that speaker.
        assert speaker_voice.setdefault(speaker, (entry["engine"], entry["voice"])) == (
            entry["engine"],
            entry["voice"],
        )
        assert chapter_speed.setdefault((speaker, chapter), entry["speed"]) == entry["speed"]
    assert len({e["text"] for e in entries}) == NUM  # no sentence twice while there are enough
    params = json.loads((root / "corpus.json").read_text())
    assert params["num_utterances"] == NUM and params["seed"] == SEED
    assert params["engines"] == ["piper", "espeak"] and params["noise_snr_db"] is None


def test_audio_is_16k_mono_speech_of_the_manifest_duration(clean_manifest):
    for entry in read_manifest(clean_manifest):
        info = sf.info(entry["audio_filepath"])
        assert (info.samplerate, info.channels, info.format) == (SAMPLE_RATE, 1, "FLAC")
        assert info.frames / SAMPLE_RATE == pytest.approx(entry["duration"], abs=1e-9)
        # About 2.5 words a second or slower; a short or silent file means the engine failed.
        assert len(entry["text"].split()) / 5 < entry["duration"] < 15
        audio = _audio(entry)
        assert np.max(np.abs(audio)) == pytest.approx(corpus.PEAK_LEVEL, abs=1e-3)
        assert np.sqrt(np.mean(audio**2)) > 0.02


def test_trans_txt_matches_manifest(clean_manifest):
    lines = {}
    for trans in clean_manifest.parent.glob("*/*/*.trans.txt"):
        assert trans.name == f"{trans.parent.parent.name}-{trans.parent.name}.trans.txt"
        for line in trans.read_text().splitlines():
            utt_id, transcript = line.split(" ", 1)
            assert (trans.parent / f"{utt_id}.flac").is_file()
            assert re.fullmatch(r"[A-Z0-9']+( [A-Z0-9']+)*", transcript)
            lines[utt_id] = transcript
    expected = {e["id"]: librispeech_transcript(e["text"]) for e in read_manifest(clean_manifest)}
    assert lines == expected


def test_librispeech_transcript():
    assert librispeech_transcript("I'm not sure, but I think the shop closes at six.") == (
        "I'M NOT SURE BUT I THINK THE SHOP CLOSES AT SIX"
    )
    assert librispeech_transcript("Born in nineteen forty-eight?") == "BORN IN NINETEEN FORTY EIGHT"
    assert librispeech_transcript("Room 12, on the 4th floor.") == "ROOM 12 ON THE 4TH FLOOR"


def test_same_seed_gives_identical_corpus(clean_manifest, tmp_path):
    again = synthesize_corpus(tmp_path, num_utterances=NUM, seed=SEED)
    assert again.read_text() == clean_manifest.read_text()
    for first, second in zip(read_manifest(clean_manifest), read_manifest(again), strict=True):
        np.testing.assert_array_equal(_audio(first), _audio(second))


def test_different_seed_chooses_differently():
    plans = {seed: plan_corpus(NUM, seed) for seed in (0, 1, 2)}
    assert plan_corpus(NUM, 0) == plans[0]
    selections = {tuple((u.text, u.rendition) for u in plan) for plan in plans.values()}
    assert len(selections) == 3
    assert {u.text for u in plans[0]} != {u.text for u in plans[1]}


def test_more_utterances_than_sentences_repeat_them():
    plan = plan_corpus(len(SENTENCES) + 5, 0)
    assert len({u.id for u in plan}) == len(plan)
    assert len({u.text for u in plan}) == len(SENTENCES)


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_noise_is_added_at_the_requested_snr(clean_manifest, tmp_path, snr_db):
    noisy = read_manifest(synthesize_corpus(tmp_path, num_utterances=NUM, seed=SEED, noise_snr_db=snr_db))
    for clean_entry, noisy_entry in zip(read_manifest(clean_manifest), noisy, strict=True):
        assert noisy_entry["snr_db"] == snr_db and noisy_entry["noise"] in ("white", "pink")
        clean, mixture = _audio(clean_entry), _audio(noisy_entry)
        # The same seed gives the same speech; a loud mixture may have been scaled down, so the
        # speech in it is found by projection and the rest is the noise.
        gain = np.dot(mixture, clean) / np.dot(clean, clean)
        noise = mixture - gain * clean
        measured = 10 * np.log10(np.sum((gain * clean) ** 2) / np.sum(noise**2))
        assert measured == pytest.approx(snr_db, abs=0.5), noisy_entry["id"]


def test_pink_noise_has_more_power_at_low_frequencies():
    rng = np.random.default_rng(0)

    def low_to_high(kind):
        power = np.abs(np.fft.rfft(corpus.make_noise(kind, SAMPLE_RATE, rng))) ** 2
        return power[100:500].mean() / power[4000:8000].mean()  # 100-500 Hz against 4-8 kHz

    assert low_to_high("white") == pytest.approx(1.0, rel=0.3)
    assert low_to_high("pink") > 5


def test_cached_corpus_is_reused_not_resynthesised(tmp_path):
    manifest = synthesize_corpus(tmp_path, num_utterances=2, seed=1, engines=("espeak",))
    before = _mtimes(tmp_path)
    assert synthesize_corpus(tmp_path, num_utterances=2, seed=1, engines=["espeak"]) == manifest
    assert _mtimes(tmp_path) == before

    synthesize_corpus(tmp_path, num_utterances=2, seed=1, engines=("espeak",), overwrite=True)
    rewritten = _mtimes(tmp_path)
    assert all(rewritten[p] != before[p] for p in before if p.suffix == ".flac")

    # Other parameters replace the corpus: nothing of the old one is left behind.
    other = read_manifest(synthesize_corpus(tmp_path, num_utterances=3, seed=2, engines=("espeak",)))
    flac_files = {str(p) for p in tmp_path.rglob("*.flac")}
    assert flac_files == {e["audio_filepath"] for e in other}


def test_incomplete_corpus_is_synthesised_again(tmp_path):
    manifest = synthesize_corpus(tmp_path, num_utterances=2, seed=1, engines=("espeak",))
    Path(read_manifest(manifest)[0]["audio_filepath"]).unlink()
    synthesize_corpus(tmp_path, num_utterances=2, seed=1, engines=("espeak",))
    assert all(Path(e["audio_filepath"]).is_file() for e in read_manifest(manifest))


def test_bad_arguments_raise_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown engine.*'festival'"):
        synthesize_corpus(tmp_path, engines=("piper", "festival"))
    with pytest.raises(ValueError, match="unknown engine"):
        synthesize_corpus(tmp_path, engines=())
    with pytest.raises(ValueError, match="num_utterances must be a positive integer"):
        synthesize_corpus(tmp_path, num_utterances=0)
    with pytest.raises(ValueError, match="seed"):
        synthesize_corpus(tmp_path, seed=-1)
    with pytest.raises(ValueError, match="noise_snr_db"):
        synthesize_corpus(tmp_path, noise_snr_db=float("nan"))
    (tmp_path / "notes.txt").write_text("not a corpus")
    with pytest.raises(ValueError, match="holds no corpus"):
        synthesize_corpus(tmp_path, num_utterances=1)
    assert (tmp_path / "notes.txt").read_text() == "not a corpus"

    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng to be found
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        synthesize_corpus(tmp_path / "out", engines=("espeak",))


def test_concatenate_utterances(clean_manifest):
    entries = read_manifest(clean_manifest)
    audio, text = concatenate_utterances(entries, gap_seconds=0.25)
    gap = round(0.25 * SAMPLE_RATE)
    lengths = [sf.info(e["audio_filepath"]).frames for e in entries]
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == sum(lengths) + gap * (len(entries) - 1)
    assert text == " ".join(e["text"] for e in entries)
    assert not np.any(audio[lengths[0] : lengths[0] + gap])  # silence between utterances

    limit = (lengths[0] + gap + lengths[1]) / SAMPLE_RATE
    short, short_text = concatenate_utterances(entries, gap_seconds=0.25, max_seconds=limit)
    assert len(short) == lengths[0] + gap + lengths[1]
    assert short_text == f"{entries[0]['text']} {entries[1]['text']}"
    with pytest.raises(ValueError, match="at least one"):
        concatenate_utterances([])


def test_command_line(tmp_path, capsys):
    assert corpus.main(["--output", str(tmp_path), "--num", "2", "--engines", "espeak", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "2 utterances" in printed and "espeak" in printed and "piper" not in printed
    assert len(read_manifest(tmp_path)) == 2
    with pytest.raises(SystemExit):
        corpus.main(["--output", str(tmp_path / "x"), "--engines", "festival"])
    assert "unknown engine" in capsys.readouterr().err
