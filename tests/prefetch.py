"""The int8 gate's in-process decoding, done ahead of its test by a background process at idle priority.

``test_int8_wer_within_half_a_point_of_fp32_and_served_int8_matches_in_process`` (tests/test_serving.py)
decodes its 400 held-out utterances one at a time in-process with the int8 and with the fp32 repository:
800 decodes, minutes of CPU on CI's two cores. The rest of the suite leaves a core idle for about a
third of its time (server start-ups, subprocesses, streams paced at real time, single-threaded steps),
and that test comes late. So when it is selected, conftest starts this module right after collection as
a process with the SCHED_IDLE policy (it only gets a core that nothing else wants, so the tests around it
run as before): it builds both repositories into the content cache (tests/artifacts.py, where the
session's own fixtures then find them), synthesises the held-out corpus, and decodes it with each
repository exactly as the test does (the test module's own ``_held_out`` and ``_in_process``), writing
the transcripts into a folder of this session. The test takes them from there, waiting for the worker if
it is still busy (and lifting its idle priority: it then has the machine to itself, even where other
processes share it; the session's own builds do the same when they find the worker building). If the
worker is not running, failed, or worked on other content, the test decodes in-process itself. Nothing
is kept between sessions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GATE_TEST = "test_int8_wer_within_half_a_point_of_fp32_and_served_int8_matches_in_process"
PRECISIONS = ("int8", "fp32")  # int8 first: the session builds fp32 itself early on, and would wait

_worker: subprocess.Popen | None = None
_directory: Path | None = None


def _key(repository: Path, entries: list[dict]) -> str:
    """What a result depends on: the repository (its folder is named by its content) and the utterances."""
    listed = [(e["id"], e["audio_filepath"], os.path.getsize(e["audio_filepath"])) for e in entries]
    return hashlib.sha256(json.dumps([Path(repository).name, listed]).encode()).hexdigest()[:20]


def _result_path(directory: Path, repository: Path, entries: list[dict]) -> Path:
    return directory / f"{Path(repository).name}-{_key(repository, entries)}.json"


# -- the session's side ----------------------------------------------------------------------------------


def start(items) -> None:
    """Start the worker if the int8 gate is among the selected ``items`` (pytest's collected tests)."""
    global _worker, _directory
    if _worker is not None or not any(item.name == GATE_TEST for item in items):
        return
    _directory = Path(tempfile.mkdtemp(prefix="whisper-triton-prefetch-"))
    log = open(_directory / "worker.log", "wb")
    path = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    _worker = subprocess.Popen(
        [sys.executable, "-m", "tests.prefetch", str(_directory)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole at the end
    )
    log.close()


def stop() -> None:
    """End the worker (and its build processes) if it is still running, and remove its folder."""
    global _worker, _directory
    if _worker is not None and _worker.poll() is None:
        try:
            os.killpg(_worker.pid, signal.SIGTERM)
            _worker.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(_worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _worker.wait()
    if _directory is not None:
        shutil.rmtree(_directory, ignore_errors=True)
    _worker = _directory = None


def hurry() -> None:
    """The session waits for the worker: every thread of its processes back to the normal policy, so that
    it no longer gives way to anything (other processes on a shared machine included)."""
    if _worker is None or _worker.poll() is not None:
        return
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getpgid(int(name)) != _worker.pid:
                continue
            for task in os.listdir(f"/proc/{name}/task"):
                os.sched_setscheduler(int(task), os.SCHED_OTHER, os.sched_param(0))
        except (OSError, AttributeError):
            continue  # gone meanwhile, or no such policy here (then it was only niced)


def prefetched(repository: Path, entries: list[dict]) -> list[str] | None:
    """The worker's one-at-a-time in-process transcripts of ``entries`` with ``repository``, waiting for
    them while it works; None when there is no worker or it ended without them (decode them yourself)."""
    if _worker is None or _directory is None:
        return None
    result = _result_path(_directory, repository, entries)
    if not result.is_file():
        hurry()
    while not result.is_file():
        if _worker.poll() is not None and not result.is_file():
            log = (_directory / "worker.log").read_text(errors="replace")[-2000:]
            print(
                f"prefetch worker ended (exit {_worker.returncode}) without {result.name}; decoding here.\n{log}"
            )
            return None
        time.sleep(0.5)
    return json.loads(result.read_text())


# -- the worker's side -----------------------------------------------------------------------------------


def _idle_priority() -> None:
    """Only idle cores from now on (threads started later, ONNX Runtime's included, inherit it), and end
    with the session's process."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(directory: Path) -> int:
    _idle_priority()
    from tests.test_serving import _held_out

    entries = _held_out()
    for precision in PRECISIONS:
        # In a process of its own (at the same priority): torch and the export's memory go with it.
        subprocess.run([sys.executable, "-m", "tests.prefetch", "--build", precision], check=True)
        from tests.artifacts import repository_path
        from tests.test_serving import _in_process
        from whisper_triton.audio import load_audio

        repository = repository_path("tiny.en", precision)
        transcriber = _in_process(repository)
        texts = [transcriber.transcribe(load_audio(entry["audio_filepath"])).text for entry in entries]
        target = _result_path(directory, repository, entries)
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(texts))
        temporary.replace(target)
        print(f"{target.name}: {len(texts)} transcripts", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--build":
        from tests.artifacts import built_repository

        built_repository("tiny.en", sys.argv[2])
        sys.exit(0)
    sys.exit(main(Path(sys.argv[1])))
