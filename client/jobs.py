"""Batch jobs that survive being interrupted: which files to transcribe, and where each result goes.

Each result is written completely or not at all, the moment it is known: a file of ``--output-dir`` is
written under a temporary name and renamed over its final name (``os.replace`` is atomic), a line of
``--jsonl`` is appended with one ``write`` call and synced to disk. A re-run skips every input whose
result exists (its output file, or its id in the JSONL), so a killed job loses at most the requests in
flight and writes nothing twice. Failed inputs are reported, not written: a re-run tries them again.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from whisper_triton.client.formats import render

# What a folder argument is searched for (recursively). The server decodes any format FFmpeg knows; these
# are the audio (and audio-in-video) containers people keep recordings in.
AUDIO_EXTENSIONS = frozenset(
    ".wav .flac .mp3 .ogg .oga .opus .m4a .aac .wma .webm .aif .aiff .mp4 .mka".split()
)
PARTIAL_SUFFIX = ".partial"  # a result being written; renamed to its final name when complete


@dataclass(frozen=True)
class JobInput:
    path: Path  # the audio file
    key: str  # its id in outputs: the path as given, or as found under a folder argument
    relative: Path  # where its output goes under --output-dir (the audio's path inside its folder argument)


def find_inputs(arguments: list[str]) -> list[JobInput]:
    """Files as given (a missing one stays in the list: its error is reported like any other) and the
    audio files under each folder, recursively, in sorted order; each file once."""
    found: dict[str, JobInput] = {}
    for argument in arguments:
        root = Path(argument)
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
                    found.setdefault(str(path), JobInput(path, str(path), path.relative_to(root)))
        else:
            found.setdefault(str(root), JobInput(root, str(root), Path(root.name)))
    return list(found.values())


class OutputDir:
    """One file per input, ``DIR/<its path inside its folder argument>`` with the format's extension."""

    def __init__(self, directory: Path, fmt: str, inputs: list[JobInput]):
        self.directory, self.fmt = Path(directory), fmt
        targets: dict[Path, JobInput] = {}
        for item in inputs:
            other = targets.setdefault(self.target(item), item)
            if other is not item:
                raise ValueError(
                    f"{other.key} and {item.key} would both be written to {self.target(item)}; "
                    "transcribe them in separate runs or use --jsonl"
                )
        for target in targets:  # what an interrupted run was writing: never a result, always redone
            self._partial(target).unlink(missing_ok=True)

    @staticmethod
    def _partial(target: Path) -> Path:
        return target.with_name(f".{target.name}{PARTIAL_SUFFIX}")

    def target(self, item: JobInput) -> Path:
        return self.directory / item.relative.with_suffix(f".{self.fmt}")

    def done(self, item: JobInput) -> bool:
        return self.target(item).is_file()

    def write(self, item: JobInput, text: str, segments: list[dict], seconds: float) -> None:
        target = self.target(item)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = self._partial(target)
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(render(text, segments, self.fmt))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)  # atomic: the target is absent or complete, never half-written

    def close(self) -> None:
        pass


class JsonlFile:
    """One line per input, ``{"id", "text", "segments", "seconds"}``, appended as each one finishes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done_keys = self._read_done()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _read_done(self) -> set[str]:
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A line cut short (the disk filled up mid-write): that input is not done; drop the piece so
            # the next line starts on a line of its own.
            complete = data[: data.rfind(b"\n") + 1]
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
            data = complete
        keys = set()
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    keys.add(json.loads(line)["id"])
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise ValueError(f"{self.path} line {number} is not a result line ({error})") from None
        return keys

    def done(self, item: JobInput) -> bool:
        return item.key in self.done_keys

    def write(self, item: JobInput, text: str, segments: list[dict], seconds: float) -> None:
        record = {"id": item.key, "text": text, "segments": segments, "seconds": round(seconds, 3)}
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self.fd, line)  # one append: a regular file takes it whole (O_APPEND)
        while written < len(line):  # a short write (disk full, signal): finish the line
            written += os.write(self.fd, line[written:])
        os.fsync(self.fd)
        self.done_keys.add(item.key)

    def close(self) -> None:
        os.close(self.fd)


class Stdout:
    """Transcripts on standard output in input order (each printed once every earlier input is done)."""

    def __init__(self, fmt: str, inputs: list[JobInput], stream: TextIO = sys.stdout):
        self.fmt, self.stream = fmt, stream
        self.order = {item.key: position for position, item in enumerate(inputs)}
        self.inputs, self.next, self.waiting = inputs, 0, {}
        self.headers = len(inputs) > 1

    def done(self, item: JobInput) -> bool:
        return False

    def write(self, item: JobInput, text: str, segments: list[dict], seconds: float) -> None:
        self.waiting[self.order[item.key]] = (item, render(text, segments, self.fmt), seconds)
        self._flush()

    def skip(self, item: JobInput) -> None:
        """A failed input: nothing to print, but later ones need not wait for it."""
        self.waiting[self.order[item.key]] = None
        self._flush()

    def _flush(self) -> None:
        while self.next in self.waiting:
            entry = self.waiting.pop(self.next)
            self.next += 1
            if entry is None:
                continue
            item, rendered, seconds = entry
            if self.headers:
                self.stream.write(f"==> {item.key} ({seconds:.2f} s)\n")
            self.stream.write(rendered)
        self.stream.flush()

    def close(self) -> None:
        pass
