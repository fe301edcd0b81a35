"""make perf: Triton's perf_analyzer against the `whisper` ensemble, fed with the corpus speech.

Builds tiny.en (python runtime, --precision, default int8) into <cache>/perf-repository-<precision> unless
--model-repository names a built one, starts tritonserver, runs perf_analyzer at each concurrency over
gRPC, prints a Markdown table and writes JSON (default artifacts/perf_analyzer.json). With --url it
measures an already running server instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from whisper_triton.audio import load_audio
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.client import perf_analyzer
    from whisper_triton.corpus import read_manifest, synthesize_corpus
    from whisper_triton.paths import cache_dir
    from whisper_triton.server.launcher import TritonServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="int8")
    parser.add_argument("--model-repository", type=Path, help="a built repository (default: build one)")
    parser.add_argument("--url", help="measure a running server's gRPC endpoint instead (host:8001)")
    parser.add_argument("--concurrency", default="1,2,4", help="comma-separated (default 1,2,4)")
    parser.add_argument("--utterances", type=int, default=40, help="corpus clips cycled through (40)")
    parser.add_argument("--requests-per-window", type=int, default=20)
    parser.add_argument(
        "--request-count",
        type=int,
        help="measure exactly N requests per level, no stability search (for busy machines)",
    )
    parser.add_argument("--output", type=Path, default=REPO / "artifacts" / "perf_analyzer.json")
    args = parser.parse_args(argv)

    entries = read_manifest(
        synthesize_corpus(cache_dir("test-corpus"), num_utterances=args.utterances, seed=0)
    )
    audios = [load_audio(e["audio_filepath"]) for e in entries]
    concurrency = [int(c) for c in args.concurrency.split(",")]

    def measure(url: str):
        return perf_analyzer.measure(
            url,
            audios,
            concurrency=concurrency,
            requests_per_window=args.requests_per_window,
            request_count=args.request_count,
        )

    if args.url:
        results = measure(args.url)
    else:
        repository = args.model_repository
        if repository is None:
            repository = cache_dir(f"perf-repository-{args.precision}")
            print(f"building tiny.en ({args.precision}) into {repository} ...", flush=True)
            build_model_repository("tiny.en", repository, precision=args.precision)
        with TritonServer(repository, log_path=cache_dir("perf-server.log")) as server:
            print(f"tritonserver ready at {server.url_grpc}; running perf_analyzer ...", flush=True)
            results = measure(server.url_grpc)
    print(perf_analyzer.table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2) + "\n")
    print(f"JSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
