"""Where whisper-triton keeps what it generates: one cache directory, never the source tree or the package.

``WHISPER_TRITON_CACHE`` overrides it; otherwise ``$XDG_CACHE_HOME/whisper-triton`` (``~/.cache/whisper-triton``).
Everything under it can be deleted and is rebuilt on demand: converted checkpoints, the local Triton
runtime, perf_analyzer, synthesised corpora, server logs.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "WHISPER_TRITON_CACHE"


def cache_dir(*parts: str) -> Path:
    """``<cache>/<parts...>`` (not created)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        root = Path(override)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper-triton"
    return root.expanduser().joinpath(*parts)


# huggingface_hub's own reading of HF_HUB_OFFLINE (its constants._is_true): anything else means online.
HUB_OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` says to stay off the Hugging Face hub, read as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in HUB_OFFLINE_VALUES


@contextmanager
def locked(directory: Path, name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (created if missing) through the file ``name`` in it:
    processes preparing the same cached thing (make setup, test sessions) wait for each other."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / name, "a") as lock:  # "a": taking the lock leaves the file as it is
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
