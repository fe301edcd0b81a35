"""Listing speech for fine-tuning and evaluation: LibriSpeech-layout folders and manifests, on local disk.

A folder holding ``manifest.jsonl`` (as ``whisper_triton.corpus`` writes) is read through the manifest,
whose text keeps its case and punctuation; LibriSpeech's own transcripts are upper case without
punctuation. Missing audio files and empty transcripts are errors that name file and line; utterances
longer than Whisper's one 30-second window are dropped with a warning that counts them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from whisper_triton.audio import AudioError, load_audio
from whisper_triton.constants import CHUNK_LENGTH, SAMPLE_RATE

logger = logging.getLogger(__name__)

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


def split_candidates(split: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Where ``split`` may be on local disk, in the order they are tried."""
    candidates = [Path(split).expanduser()]
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        candidates += [
            root / split,
            root / "LibriSpeech" / split,  # as the openslr tarballs unpack
            root / f"{split}.jsonl",
            root / f"{split}.csv",
        ]
    return candidates


def resolve_local_split(split: str, data_dir: str | os.PathLike | None) -> Path | None:
    """The folder or manifest that holds ``split`` locally, or None if there is none."""
    return next((path for path in split_candidates(split, data_dir) if path.exists()), None)


def _with_durations(utterances: list[Utterance]) -> list[Utterance]:
    """Fill in missing durations from the file headers (decoding only what soundfile cannot read)."""
    result = []
    for utt in utterances:
        if utt.duration is None:
            try:
                duration = sf.info(utt.audio_filepath).duration
            except (RuntimeError, sf.LibsndfileError):  # mp3/m4a/...: decode it
                duration = len(load_utterance_audio(utt.audio_filepath)) / SAMPLE_RATE
            utt = dataclasses.replace(utt, duration=duration)
        result.append(utt)
    return result


def filter_by_duration(utterances: list[Utterance], max_duration_s: float, name: str) -> list[Utterance]:
    """Drop utterances longer than ``max_duration_s``, with a warning that counts them."""
    utterances = _with_durations(utterances)
    kept = [utt for utt in utterances if utt.duration <= max_duration_s]
    if len(kept) < len(utterances):
        longest = max(utt.duration for utt in utterances)
        logger.warning(
            "%s: dropped %d of %d utterances longer than %.1f s (longest %.1f s); Whisper encodes one %d-second "
            "window, so their transcripts would not match what the model hears",
            name,
            len(utterances) - len(kept),
            len(utterances),
            max_duration_s,
            longest,
            CHUNK_LENGTH,
        )
    if not kept:
        raise DataError(f"{name}: no utterance of at most {max_duration_s} s")
    return kept


def load_utterance_audio(path: str) -> np.ndarray:
    try:
        return load_audio(path)
    except AudioError as error:
        raise DataError(str(error)) from error
