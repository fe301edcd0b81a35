"""Where whisper-triton keeps what it generates: one cache directory, never the source tree or the package.

``WHISPER_TRITON_CACHE`` overrides it; otherwise ``$XDG_CACHE_HOME/whisper-triton`` (``~/.cache/whisper-triton``).
Everything under it can be deleted and is rebuilt on demand: converted checkpoints, the local Triton
runtime, perf_analyzer, synthesised corpora, server logs.
"""

from __future__ import annotations

import os
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
