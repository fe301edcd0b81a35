"""Benchmark whisper_triton.features against transformers' WhisperFeatureExtractor.

    python scripts/bench_features.py [--repeats 7] [--output artifacts/bench_features.json]

Cases: 1 x 30 s, 8 x 30 s and 8 clips of mixed lengths (1..30 s). For each, the median wall time of
``--repeats`` runs (the implementations take turns within every repeat, so a busy machine slows them
alike, with a short pause before each run so that one's idle worker threads do not slow the next) of:

- ours: ``extract_features(list_of_clips)``, padding included;
- HF numpy: transformers' numpy STFT, ``WhisperFeatureExtractor._np_extract_fbank_features`` (the branch
  its ``__call__`` takes when torch is not installed), on the clips already padded to 30 s: the padding is
  not timed for it, so the speed-up is if anything understated;
- HF call: ``WhisperFeatureExtractor(...)(clips, sampling_rate=16000, return_tensors="np")``, which uses
  torch's STFT when torch is installed (as here) and the numpy path otherwise.

It also reports the largest absolute difference of our features from each. This is a measurement, not a
test: it prints a table, writes JSON and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from whisper_triton.constants import N_MELS, SAMPLE_RATE
from whisper_triton.features import extract_features, pad_or_trim

MIXED_SECONDS = (1, 3, 5, 8, 12, 17, 24, 30)  # eight clip lengths spanning short commands to a full window
TARGET_SPEEDUP = 5.0  # what the design asks of batched extraction against transformers' numpy path
# Pause before each timed run: torch's OpenMP and OpenBLAS worker threads spin for a while after a call, and
# would otherwise steal the cores from whichever implementation runs next.
SETTLE_SECONDS = 0.05


def make_cases(seed: int) -> dict[str, list[np.ndarray]]:
    """Speech-level white noise (RMS 0.1): the work does not depend on content, only on lengths."""
    rng = np.random.default_rng(seed)

    def clip(seconds):
        return (rng.standard_normal(seconds * SAMPLE_RATE) * 0.1).astype(np.float32)

    return {
        "1 x 30 s": [clip(30)],
        "8 x 30 s": [clip(30) for _ in range(8)],
        "8 x mixed (1-30 s)": [clip(s) for s in MIXED_SECONDS],
    }


def bench_case(clips: list[np.ndarray], extractor, repeats: int) -> dict:
    padded = np.stack([pad_or_trim(c) for c in clips])
    runs = {
        "ours": lambda: extract_features(clips),
        "hf_numpy": lambda: extractor._np_extract_fbank_features(padded, "cpu"),
        "hf_call": lambda: extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features,
    }
    outputs = {name: np.asarray(run()) for name, run in runs.items()}  # also warms caches and lazy imports
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return {
        "clips": len(clips),
        "seconds": [round(c.size / SAMPLE_RATE, 3) for c in clips],
        "median_ms": ms,
        "min_ms": {name: 1000 * min(t) for name, t in times.items()},
        "speedup_vs_hf_numpy": ms["hf_numpy"] / ms["ours"],
        "speedup_vs_hf_call": ms["hf_call"] / ms["ours"],
        "max_abs_diff_vs_hf_numpy": float(np.abs(outputs["ours"] - outputs["hf_numpy"]).max()),
        "max_abs_diff_vs_hf_call": float(np.abs(outputs["ours"] - outputs["hf_call"]).max()),
    }


def environment() -> dict:
    import transformers

    try:
        import torch

        torch_version = torch.__version__
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_version, torch_threads = None, None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "transformers": transformers.__version__,
        "torch": torch_version,
        "torch_threads": torch_threads,
        "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"),
    }


def print_table(results: dict) -> None:
    header = (
        f"{'case':<20} {'ours ms':>8} {'HF numpy ms':>12} {'speed-up':>9} {'HF call ms':>11} {'speed-up':>9} "
        f"{'max|diff| numpy':>16} {'max|diff| call':>15}"
    )
    print(header)
    print("-" * len(header))
    for case, r in results.items():
        ms = r["median_ms"]
        print(
            f"{case:<20} {ms['ours']:>8.1f} {ms['hf_numpy']:>12.1f} {r['speedup_vs_hf_numpy']:>8.1f}x "
            f"{ms['hf_call']:>11.1f} {r['speedup_vs_hf_call']:>8.1f}x "
            f"{r['max_abs_diff_vs_hf_numpy']:>16.2e} {r['max_abs_diff_vs_hf_call']:>15.2e}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed runs per implementation and case (median)"
    )
    parser.add_argument("--output", type=Path, default=Path("artifacts/bench_features.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=N_MELS)
    results = {
        case: bench_case(clips, extractor, args.repeats) for case, clips in make_cases(args.seed).items()
    }
    print_table(results)
    batched = results["8 x 30 s"]["speedup_vs_hf_numpy"]
    verdict = "meets" if batched >= TARGET_SPEEDUP else "MISSES"
    print(
        f"\n8 x 30 s: {batched:.1f}x transformers' numpy path ({verdict} the {TARGET_SPEEDUP:g}x target); "
        f"{os.cpu_count()} CPUs, median of {args.repeats}"
    )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {"repeats": args.repeats, "seed": args.seed, "environment": environment(), "results": results}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
