"""Listing speech on local disk: LibriSpeech-layout folders and JSONL/CSV manifests of (audio, text) pairs.

A folder holding ``manifest.jsonl`` (as ``whisper_triton.corpus`` writes) is read through the manifest,
whose text keeps its case and punctuation; LibriSpeech's own transcripts are upper case without
punctuation. Missing audio files and empty transcripts are errors that name file and line.

Training (``training.utterances``, ``training.data``) and the client's ``whisper-triton eval`` read data
sets through this module; it imports nothing outside the standard library.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUDIO_EXTENSIONS = (
    ".flac",
    ".wav",
    ".mp3",
    ".ogg",
    ".opus",
    ".m4a",
)  # tried in this order next to a transcript
MANIFEST_NAME = "manifest.jsonl"
# Column names accepted in manifests: ours / NeMo ("audio_filepath"), common CSV exports, Common Voice.
PATH_KEYS = ("audio_filepath", "path", "audio", "file", "filename")
TEXT_KEYS = ("text", "transcript", "transcription", "sentence")


class DataError(ValueError):
    """Unusable training or evaluation data; the message names the file (and line) at fault."""


@dataclass(frozen=True)
class Utterance:
    """One (audio file, transcript) pair."""

    id: str
    audio_filepath: str
    text: str
    duration: float | None = None  # seconds; None until measured


def read_librispeech_dir(root: str | os.PathLike) -> list[Utterance]:
    """Every utterance under ``root`` in LibriSpeech layout; through ``manifest.jsonl`` when one is there."""
    root = Path(root)
    if (root / MANIFEST_NAME).is_file():
        return read_manifest_file(root / MANIFEST_NAME)
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise DataError(f"{root} holds no LibriSpeech transcripts (*.trans.txt) and no {MANIFEST_NAME}")
    utterances = []
    for trans in transcripts:
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            where = f"{trans} line {number}"
            if not text.strip():
                raise DataError(f"{where}: empty transcript for {utt_id}")
            audio = next(
                (
                    trans.parent / (utt_id + ext)
                    for ext in AUDIO_EXTENSIONS
                    if (trans.parent / (utt_id + ext)).is_file()
                ),
                None,
            )
            if audio is None:
                raise DataError(
                    f"{where}: no audio file for {utt_id} ({utt_id}.flac or {'/'.join(AUDIO_EXTENSIONS)})"
                )
            utterances.append(Utterance(utt_id, str(audio), text.strip()))
    return utterances


def read_manifest_file(path: str | os.PathLike) -> list[Utterance]:
    """A JSONL (one object per line) or CSV (header row) manifest; relative paths are from its folder."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = [(reader.line_num, row) for row in reader]
    else:
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise DataError(f"{path} line {number}: invalid JSON ({error})") from None
    return [_manifest_row(path, number, row) for number, row in rows]


def _manifest_row(manifest: Path, number: int, row: Any) -> Utterance:
    where = f"{manifest} line {number}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with an audio path and a text")
    path_key = next((key for key in PATH_KEYS if isinstance(row.get(key), str)), None)
    text_key = next((key for key in TEXT_KEYS if key in row), None)
    if path_key is None or text_key is None:
        raise DataError(
            f"{where}: needs an audio path ({' or '.join(PATH_KEYS)}) and a text ({' or '.join(TEXT_KEYS)})"
        )
    audio = Path(row[path_key]).expanduser()
    audio = audio if audio.is_absolute() else manifest.resolve().parent / audio
    utt_id = str(row.get("id") or audio.stem)
    text = row[text_key]
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: empty transcript for {utt_id}")
    if not audio.is_file():
        raise DataError(f"{where}: audio file {audio} does not exist")
    duration = row.get("duration")
    duration = float(duration) if duration not in (None, "") else None
    return Utterance(utt_id, str(audio), text.strip(), duration)


def list_utterances(source: str | os.PathLike) -> list[Utterance]:
    """The utterances of a LibriSpeech-layout folder or a manifest file."""
    source = Path(source)
    if source.is_dir():
        return read_librispeech_dir(source)
    if source.is_file():
        return read_manifest_file(source)
    raise DataError(f"{source} does not exist")
