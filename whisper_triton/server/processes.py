"""The processes and shared memory a ``tritonserver`` leaves on this machine, found through ``/proc``.

The Python backend forks one stub process per model instance, and each stub shares memory with the
server through regions in ``/dev/shm``. A server stopped properly takes both with it; one killed outright
(``kill -9``, out of memory) leaves stubs without their server and regions nobody maps. This module finds
a server's stubs (:func:`stub_processes`, one walk over ``/proc``: :func:`processes`), and removes what
dead servers left behind (:func:`remove_orphans`, :func:`remove_orphaned_shared_memory`).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

POLL_INTERVAL_S = 0.1
STUB_BINARY = "triton_python_backend_stub"
SHM_DIRECTORY = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def processes() -> Iterator[tuple[int, int]]:
    """(pid, parent pid) of every process still running while /proc is read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                yield int(entry), int(stat.read().split(") ")[-1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue


def stub_processes(server_pid: int) -> dict[int, list[str]]:
    """The Python-backend stub processes of a server (pid -> the shared-memory regions they use)."""
    stubs = {}
    for pid, parent in processes():
        if parent != server_pid:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                arguments = handle.read().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if arguments and arguments[0].endswith(STUB_BINARY):
            stubs[pid] = [a for a in arguments if a.startswith(SHM_PREFIX)]
    return stubs


def remove_orphans(stub_binary: Path) -> None:
    """What servers killed outright left behind: their stubs (running this ``stub_binary``, now without
    a parent server) and the shared-memory regions no process maps any more."""
    killed = []
    for pid, parent in processes():
        try:
            executable = os.readlink(f"/proc/{pid}/exe")
        except OSError:  # gone, or not ours to read
            continue
        if executable == str(stub_binary.resolve()) and (parent == 1 or not _is_server(parent)):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 5
    while any(process_alive(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)  # their mappings go when they are gone
    remove_orphaned_shared_memory()


def _is_server(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("tritonserver")
    except OSError:
        return False


def remove_orphaned_shared_memory() -> list[str]:
    """Delete Python-backend shared-memory regions that no running process maps (left by a server that
    was killed outright); returns their names."""
    regions = {path.name for path in SHM_DIRECTORY.glob(SHM_PREFIX + "*")}
    if not regions:
        return []
    in_use = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps") as maps:
                in_use.update(re.findall(SHM_PREFIX + r"[\w-]+", maps.read()))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    orphans = sorted(regions - in_use)
    for name in orphans:
        (SHM_DIRECTORY / name).unlink(missing_ok=True)
    return orphans


def remove_shared_memory(regions: list[str]) -> None:
    """Delete these shared-memory regions (a stopped server's), those still there."""
    for region in regions:
        (SHM_DIRECTORY / region).unlink(missing_ok=True)


def process_group_exists(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left (one that is not ours does not count)."""
    try:
        os.killpg(pgid, 0)  # signal 0: only asks whether any process of the group is left
    except ProcessLookupError:
        return False
    except PermissionError:  # a process with that id exists but is not ours: not our group any more
        return False
    return True
