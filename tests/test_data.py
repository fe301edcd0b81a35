"""Training data: LibriSpeech-layout folders, manifests, errors, filtering, augmentation and the collator."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import CORPUS_DIR, REPO_ROOT
from training.data import (
    DATA_DIR_ENV,
    LIBRISPEECH_SPLITS,
    AugmentationConfig,
    DataConfig,
    SpeechDataset,
    create_data_collator,
    create_librispeech_dataloaders,
    create_speech_dataloaders,
    hub_speech_dataset,
    load_speech_dataset,
)
from training.utterances import DataError, Utterance, list_utterances, read_librispeech_dir
from whisper_triton.audio import load_audio
from whisper_triton.corpus import librispeech_transcript
from whisper_triton.features import transcription_features


def _librispeech_copy(entries: list[dict], root: Path, count: int = 3) -> list[dict]:
    """Copy ``count`` corpus utterances into ``root`` in LibriSpeech layout, without a manifest."""
    chosen = entries[:count]
    lines: dict[Path, list[str]] = {}
    for entry in chosen:
        speaker, chapter, _ = entry["id"].split("-")
        folder = root / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(entry["audio_filepath"], folder / f"{entry['id']}.flac")
        lines.setdefault(folder / f"{speaker}-{chapter}.trans.txt", []).append(
            f"{entry['id']} {librispeech_transcript(entry['text'])}\n"
        )
    for path, text in lines.items():
        path.write_text("".join(text))
    return chosen


def test_librispeech_folder_is_read_from_transcripts(corpus_entries, tmp_path):
    chosen = _librispeech_copy(corpus_entries, tmp_path / "dev-clean")
    utterances = read_librispeech_dir(tmp_path / "dev-clean")
    assert sorted(u.id for u in utterances) == sorted(e["id"] for e in chosen)
    by_id = {u.id: u for u in utterances}
    for entry in chosen:
        assert by_id[entry["id"]].text == librispeech_transcript(entry["text"])  # upper case, as LibriSpeech
        assert Path(by_id[entry["id"]].audio_filepath).name == f"{entry['id']}.flac"
    # The same split found by name under data_dir, and under data_dir/LibriSpeech as the tarballs unpack.
    assert len(load_speech_dataset("dev-clean", DataConfig(data_dir=str(tmp_path)))) == len(chosen)
    shutil.move(tmp_path / "dev-clean", tmp_path / "LibriSpeech" / "dev-clean")
    dataset = load_speech_dataset("dev-clean", DataConfig(data_dir=str(tmp_path), lowercase=True))
    assert dataset[0]["text"] == dataset.utterances[0].text.lower() != dataset.utterances[0].text


def test_corpus_folder_is_read_through_its_manifest(corpus_entries):
    utterances = list_utterances(CORPUS_DIR)
    assert [u.id for u in utterances] == [e["id"] for e in corpus_entries]
    assert [u.text for u in utterances] == [e["text"] for e in corpus_entries]  # case and punctuation kept
    item = load_speech_dataset(str(CORPUS_DIR), DataConfig())[0]
    assert item["audio"].dtype == np.float32 and item["audio"].ndim == 1
    assert abs(len(item["audio"]) / 16000 - corpus_entries[0]["duration"]) < 0.01


def test_jsonl_and_csv_manifests_with_relative_paths(corpus_entries, tmp_path):
    for entry in corpus_entries[:2]:
        shutil.copy(entry["audio_filepath"], tmp_path / Path(entry["audio_filepath"]).name)
    names = [Path(e["audio_filepath"]).name for e in corpus_entries[:2]]
    texts = [e["text"] for e in corpus_entries[:2]]
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"path": n, "text": t}) + "\n" for n, t in zip(names, texts, strict=True))
    )
    (tmp_path / "train.csv").write_text(
        "path,text\n" + "".join(f'{n},"{t}"\n' for n, t in zip(names, texts, strict=True))
    )
    for manifest in ("train.jsonl", "train.csv"):
        utterances = list_utterances(tmp_path / manifest)
        assert [u.text for u in utterances] == texts
        assert [Path(u.audio_filepath) for u in utterances] == [tmp_path / n for n in names]
    # A split name resolves to DIR/<split>.jsonl.
    assert len(load_speech_dataset("train", DataConfig(data_dir=str(tmp_path)))) == 2


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"path": "missing.flac", "text": "hello"}', "line 2: audio file .*missing.flac does not exist"),
        ('{"path": "a.flac", "text": "  "}', "line 2: empty transcript for a"),
        ('{"path": "a.flac", "text": "hello"', "line 2: invalid JSON"),
        ('{"text": "hello"}', "line 2: needs an audio path"),
    ],
)
def test_manifest_errors_name_file_and_line(corpus_entries, tmp_path, line, message):
    shutil.copy(corpus_entries[0]["audio_filepath"], tmp_path / "a.flac")
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"path": "a.flac", "text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=f"bad.jsonl {message}"):
        list_utterances(manifest)


def test_librispeech_errors_name_file_and_line(corpus_entries, tmp_path):
    chosen = _librispeech_copy(corpus_entries, tmp_path, count=1)
    speaker, chapter, _ = chosen[0]["id"].split("-")
    trans = tmp_path / speaker / chapter / f"{speaker}-{chapter}.trans.txt"
    good = trans.read_text()
    trans.write_text(good + f"{speaker}-{chapter}-9999 HELLO THERE\n")
    with pytest.raises(DataError, match=rf"trans.txt line 2: no audio file for {speaker}-{chapter}-9999"):
        read_librispeech_dir(tmp_path)
    trans.write_text(good + f"{chosen[0]['id']}\n")
    with pytest.raises(DataError, match=rf"trans.txt line 2: empty transcript for {chosen[0]['id']}"):
        read_librispeech_dir(tmp_path)


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(DataError, match="neither a path.*LibriSpeech split name"):
        load_speech_dataset("no-such-split", DataConfig(data_dir=str(tmp_path)))


@pytest.mark.parametrize(
    ("split", "librispeech_config", "folder"),
    [
        ("train.100", "clean", "train-clean-100"),
        ("train.clean.360", None, "train-clean-360"),
        ("train.500", "other", "train-other-500"),
        ("validation.clean", "clean", "dev-clean"),
        ("validation", "other", "dev-other"),
        ("test.clean", None, "test-clean"),
        ("test", "clean", "test-clean"),
        ("test.other", "all", "test-other"),
    ],
)
def test_the_hub_datasets_split_names_find_the_local_librispeech_folders(
    corpus_entries, tmp_path, monkeypatch, split, librispeech_config, folder
):
    chosen = _librispeech_copy(corpus_entries, tmp_path / folder, count=2)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))  # the user's local copy, without a DataConfig
    loaders = create_librispeech_dataloaders(None, split, librispeech_config, 2, _items_as_they_are)
    assert loaders["train"] is None
    assert sorted(u.id for u in loaders["eval"].dataset.utterances) == sorted(e["id"] for e in chosen)


def _items_as_they_are(items):
    """The items as they are (these tests look at which utterances a loader holds, not at features)."""
    return items


def test_bare_validation_needs_a_subset_and_configs_are_checked(tmp_path):
    with pytest.raises(DataError, match="'validation' names a LibriSpeech split only with config"):
        create_librispeech_dataloaders(None, "validation", "all", 2, _items_as_they_are)
    with pytest.raises(DataError, match="not a LibriSpeech config"):
        create_librispeech_dataloaders(None, "test.clean", "noisy", 2, _items_as_they_are)
    with pytest.raises(DataError, match="a train_split, an eval_split or both"):
        create_librispeech_dataloaders(None, None, DataConfig(data_dir=str(tmp_path)), 2, _items_as_they_are)


def test_data_dir_wins_over_the_environment(corpus_entries, tmp_path, monkeypatch):
    chosen = _librispeech_copy(corpus_entries, tmp_path / "mine" / "dev-clean", count=1)
    _librispeech_copy(corpus_entries[1:], tmp_path / "env" / "dev-clean", count=2)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    dataset = load_speech_dataset("validation.clean", DataConfig(data_dir=str(tmp_path / "mine")))
    assert [u.id for u in dataset.utterances] == [chosen[0]["id"]]
    assert len(load_speech_dataset("validation.clean", DataConfig())) == 2


def test_document_split_names_without_local_data_say_where_they_looked(tmp_path):
    # A subprocess: huggingface_hub reads its endpoint once, at import; the endpoint refuses connections,
    # as on a machine without network.
    env = {k: v for k, v in os.environ.items() if k != DATA_DIR_ENV}
    env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    code = "from training.data import create_librispeech_dataloaders\ncreate_librispeech_dataloaders('train.100', None, 'clean', 8, None)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "DataError" in result.stderr
    assert "LibriSpeech train-clean-100 is not local" in result.stderr
    assert f"no data_dir is given and ${DATA_DIR_ENV} is not set" in result.stderr


@pytest.mark.parametrize(
    "env, message",
    [
        # Offline, a LibriSpeech name can only come from the datasets cache, which has no copy here.
        ({"HF_HUB_OFFLINE": "1"}, "from the datasets cache (HF_HUB_OFFLINE is set)"),
        # An endpoint that refuses connections stands for a machine without network.
        ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, "the Hugging Face hub is unreachable"),
    ],
)
def test_librispeech_names_without_the_hub_fail_fast(tmp_path, env, message):
    # A subprocess, because huggingface_hub reads these variables once, at import.
    code = (
        "from training.data import DataConfig, load_speech_dataset\n"
        f"load_speech_dataset('dev-clean', DataConfig(data_dir={str(tmp_path)!r}, cache_dir={str(tmp_path / 'c')!r}))"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "DataError" in result.stderr
    assert message in result.stderr and "DATA_DIR/dev-clean/" in result.stderr
    assert time.perf_counter() - started < 30  # seconds, imports included: no retrying for minutes


def test_hub_rows_in_librispeech_format(corpus_entries, caplog):
    """The hub path after the download: a datasets.Dataset with id/audio/text columns (built locally here)."""
    import datasets

    entries = corpus_entries[:3]
    rows = datasets.Dataset.from_dict(
        {
            "id": [e["id"] for e in entries],
            "text": [librispeech_transcript(e["text"]) for e in entries],
            "audio": [{"bytes": Path(e["audio_filepath"]).read_bytes(), "path": None} for e in entries],
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    shortest = min(e["duration"] for e in entries)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        dataset = hub_speech_dataset(rows, max_duration_s=shortest, name="dev-clean", lowercase=True)
    assert len(dataset) == 1 and "dev-clean: dropped 2 utterances longer than" in caplog.text
    kept = next(e for e in entries if e["duration"] == shortest)
    item = dataset[0]
    assert item["id"] == kept["id"] and item["text"] == librispeech_transcript(kept["text"]).lower()
    np.testing.assert_array_equal(item["audio"], load_audio(kept["audio_filepath"]))
    assert LIBRISPEECH_SPLITS["train-clean-100"] == ("clean", "train.100")


def test_long_utterances_are_dropped_with_a_counted_warning(corpus_entries, caplog):
    durations = sorted(e["duration"] for e in corpus_entries)
    limit = durations[len(durations) // 2]  # about half the corpus is longer
    expected = sum(d <= limit for d in durations)
    with caplog.at_level(logging.WARNING, logger="training.utterances"):
        dataset = load_speech_dataset(str(CORPUS_DIR), DataConfig(max_duration_s=limit))
    assert len(dataset) == expected
    assert f"dropped {len(durations) - expected} of {len(durations)} utterances longer than" in caplog.text


def test_config_validation_and_json_sections():
    with pytest.raises(DataError, match="max_label_tokens must be in 2..448"):
        DataConfig(max_label_tokens=449)
    with pytest.raises(DataError, match="unknown field.*'max_durration_s'"):
        DataConfig.from_dict({"max_durration_s": 10})
    with pytest.raises(DataError, match="augment.pitch_shift must be a"):
        AugmentationConfig(pitch_shift=(2.0, -2.0))
    assert DataConfig(augment=True).augment == AugmentationConfig()
    config = DataConfig.from_dict({"augment": {"probability": 1.0, "pitch_shift": None}})
    assert config.augment.probability == 1.0 and config.augment.pitch_shift is None


def test_augmentation_is_seeded_and_differs_between_reads(corpus_entries):
    utterance = Utterance("u", corpus_entries[0]["audio_filepath"], "text")
    augment = AugmentationConfig(probability=1.0, time_stretch=(1.05, 1.1), pitch_shift=None)
    dataset = SpeechDataset([utterance], augment=augment, seed=3)
    clean = SpeechDataset([utterance])[0]["audio"]
    torch.manual_seed(0)
    first, second = dataset[0]["audio"], dataset[0]["audio"]
    torch.manual_seed(0)
    replay = dataset[0]["audio"]
    assert len(first) < len(clean)  # sped up by 5-10%
    assert 1.05 <= len(clean) / len(first) <= 1.1 + 1e-3
    assert not np.array_equal(first, second)  # a new draw on every read (every epoch)
    np.testing.assert_array_equal(first, replay)  # ... from torch's seeded RNG


def test_collator_labels_follow_whisper_conventions(tiny_en, corpus_entries, corpus_audio):
    from transformers.models.whisper.modeling_whisper import shift_tokens_right

    model, processor = tiny_en
    tokenizer = processor.tokenizer
    collator = create_data_collator(processor)
    items = [
        {"id": e["id"], "audio": a, "text": e["text"]}
        for e, a in zip(corpus_entries[:2], corpus_audio, strict=False)
    ]
    batch = collator(items)

    np.testing.assert_array_equal(batch["input_features"].numpy(), transcription_features(corpus_audio[:2]))
    sot, nots, eot = tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"]
    )
    assert model.config.decoder_start_token_id == sot
    lengths = (batch["labels"] != -100).sum(dim=1)
    for row, item in enumerate(items):
        labels = batch["labels"][row, : lengths[row]].tolist()
        assert labels[0] == nots and labels[-1] == eot
        assert tokenizer.decode(labels[1:-1]) == " " + item["text"]  # the leading space Whisper writes
        assert (batch["labels"][row, lengths[row] :] == -100).all()
    # What the model feeds its decoder: <|startoftranscript|> <|notimestamps|> text..., padding as pad ids.
    decoder_inputs = shift_tokens_right(
        batch["labels"], model.config.pad_token_id, model.config.decoder_start_token_id
    )
    short = int(lengths.argmin())
    assert decoder_inputs[short, :2].tolist() == [sot, nots]
    assert (
        decoder_inputs[short, 1 : lengths[short] + 1].tolist()
        == batch["labels"][short, : lengths[short]].tolist()
    )


def test_collator_loss_ignores_padding(tiny_en, corpus_entries, corpus_audio):
    """The model's loss from padded labels equals the cross-entropy over the real tokens only."""
    model, processor = tiny_en
    items = [{"audio": a, "text": e["text"]} for e, a in zip(corpus_entries[:2], corpus_audio, strict=False)]
    batch = create_data_collator(processor)(items)
    with torch.inference_mode():
        output = model(**batch)
    real = batch["labels"] != -100
    expected = torch.nn.functional.cross_entropy(output.logits[real], batch["labels"][real])
    assert torch.allclose(output.loss, expected, atol=1e-5)
    assert real.sum() < batch["labels"].numel()  # there was padding to ignore


def test_collator_truncates_long_labels_with_a_warning(tiny_en, caplog):
    _, processor = tiny_en
    collator = create_data_collator(processor, max_label_tokens=5)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        ids = collator.label_ids("one two three four five six seven eight", utt_id="long-1")
    assert len(ids) == 5 and processor.tokenizer.eos_token_id not in ids
    assert "long-1: label sequence truncated to 5 tokens (1 truncated so far)" in caplog.text


def test_dataloaders_batch_and_keep_eval_order(tiny_en):
    _, processor = tiny_en
    config = DataConfig(max_train_samples=3, max_eval_samples=2, eval_batch_size=2)
    train, evaluation = create_speech_dataloaders(
        str(CORPUS_DIR), str(CORPUS_DIR), config, batch_size=2, collate_fn=create_data_collator(processor)
    )
    assert len(train.dataset) == 3 and len(train) == 2
    batch = next(iter(evaluation))
    assert batch["input_features"].shape == (2, 80, 3000) and batch["input_features"].dtype == torch.float32
    assert set(batch) == {"input_features", "labels"}
    first = processor.tokenizer.decode(
        batch["labels"][0][batch["labels"][0] != -100], skip_special_tokens=True
    )
    assert first.strip() == evaluation.dataset.utterances[0].text
    _, none = create_speech_dataloaders(str(CORPUS_DIR), None, config, 2, create_data_collator(processor))
    assert none is None
    # The API document's spelling: the same loaders, by name.
    loaders = create_librispeech_dataloaders(str(CORPUS_DIR), str(CORPUS_DIR), config, 2, _items_as_they_are)
    assert set(loaders) == {"train", "eval"}
    assert (
        len(loaders["train"].dataset) == 3
        and loaders["eval"].dataset.utterances == evaluation.dataset.utterances
    )
