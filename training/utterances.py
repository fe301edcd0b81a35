"""Speech for fine-tuning and evaluation on local disk: where a split is, and utterances that fit a window.

Folders and manifests are listed by ``whisper_triton.utterances`` (shared with the client's
``whisper-triton eval``; its names are re-exported here). Utterances longer than Whisper's one 30-second
window are dropped with a warning that counts them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from whisper_triton.audio import AudioError, load_audio
from whisper_triton.constants import CHUNK_LENGTH, SAMPLE_RATE
from whisper_triton.utterances import (  # noqa: F401 - re-exported: training's callers import them here
    AUDIO_EXTENSIONS,
    MANIFEST_NAME,
    PATH_KEYS,
    TEXT_KEYS,
    DataError,
    Utterance,
    list_utterances,
    read_librispeech_dir,
    read_manifest_file,
)

logger = logging.getLogger(__name__)


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
