"""Native programs we run (tritonserver, its Python stub, perf_analyzer): which shared libraries they lack."""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def missing_libraries(binaries: Sequence[Path], env: Mapping[str, str]) -> list[str]:
    """The ``ldd`` lines that say 'not found', for ``binaries`` run with the environment ``env``."""
    if shutil.which("ldd") is None:
        logger.warning("ldd not found: cannot check the shared libraries of %s", [b.name for b in binaries])
        return []
    missing = []
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=dict(env))
        missing += [
            f"{binary.name}: {line.strip()}" for line in result.stdout.splitlines() if "not found" in line
        ]
    return missing


def release_free_memory() -> None:
    """Hand freed heap memory back to the operating system.

    glibc keeps what a large request freed in its arenas, so without this a server process stays at its
    largest request's peak for good (measured in scripts/bench_memory.py). A no-op where there is no glibc.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
