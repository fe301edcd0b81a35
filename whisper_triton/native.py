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


# mallopt's parameter numbers in glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest (its dynamic threshold stops rising there too)
TRIM_THRESHOLD_BYTES = 64 << 20  # what the dynamic threshold would set with it (twice the mmap threshold)


def return_large_blocks_at_once() -> None:
    """Allocate every block of 32 MB or more with its own mmap, so that freeing it gives it back.

    glibc raises its mmap threshold as large blocks are freed and then serves them from the heap, where
    fragmentation keeps them: the decoding model held 2.2 GB after one 600-s request
    (scripts/bench_memory.py). A fixed threshold keeps request-sized arrays (a long request's audio,
    features, encoder states, decoder caches) out of the heap. Fixing it switches the dynamic rule off,
    trim threshold included, so that is set as the rule would: left at 128 KB, every decoder step's
    short-lived blocks of a few MB were handed back and faulted in again (decoding took twice as long,
    measured on the test corpus). The decoding model also hands free heap back after a large batch
    (``release_free_memory`` after more than its ``TRIM_ABOVE_ROWS`` decoder rows; a small batch's memory
    is kept for the next one). No-op without glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass
