"""Peak and retained memory of the server for the largest legal requests: 600 s of speech at beam 1, 5, 16.

Starts tritonserver on the fp32 tiny.en repository (built if missing), sends each request alone, and
samples the resident memory of every server process (tritonserver and each model's stub) every 50 ms:
the table gives each process's peak during the request and what it holds 5 s after.

    .venv/bin/python scripts/bench_memory.py [--seconds 600] [--beams 1 5 16]   # table + JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from whisper_triton.paths import cache_dir  # noqa: E402


def _processes(pid: int):
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _name(process) -> str:
    command = " ".join(process.cmdline())
    for model in ("whisper_features", "whisper_encoder", "whisper_decoder"):
        if f"/{model}/" in command or f"{model}_" in command:
            return model
    return "tritonserver"


class _Sampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, {}, True

    def run(self):
        while self.running:
            for name, rss in _resident(self.pid).items():  # both instances of a model together
                self.peak[name] = max(self.peak.get(name, 0), rss)
            time.sleep(0.05)


def _resident(pid: int) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for process in _processes(pid):
        try:
            rss = process.memory_info().rss
        except Exception:  # noqa: BLE001 - a process that just ended
            continue
        sizes[_name(process)] = sizes.get(_name(process), 0) + rss
    return sizes


def main(argv=None) -> int:
    import tritonclient.grpc as grpcclient

    from tests.test_serving import infer
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.corpus import concatenate_utterances, read_manifest, synthesize_corpus
    from whisper_triton.server.launcher import TritonServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--beams", type=int, nargs="*", default=[1, 5, 16])
    parser.add_argument(
        "--model-repository", type=Path, help="a built repository (default: build tiny.en fp32)"
    )
    parser.add_argument("--output", type=Path, default=REPO / "artifacts" / "memory.json")
    args = parser.parse_args(argv)

    entries = read_manifest(synthesize_corpus(cache_dir("long-form-corpus"), num_utterances=180, seed=77))
    audio, _ = concatenate_utterances(entries, gap_seconds=0.6, max_seconds=args.seconds)
    repository = args.model_repository or cache_dir("bench-repository-fp32")
    if (
        args.model_repository is None
        and not (repository / "whisper_decoder" / "1" / "decoder.onnx").is_file()
    ):
        build_model_repository("tiny.en", repository)
    rows = []
    with TritonServer(repository, log_path=cache_dir("memory-server.log")) as server:
        client = grpcclient.InferenceServerClient(server.url_grpc)
        infer(client, audio[: 16000 * 5])  # warm every model
        idle = _resident(server.pid)
        for beams in args.beams:
            sampler = _Sampler(server.pid)
            sampler.start()
            started = time.perf_counter()
            text, _ = infer(client, audio.astype(np.float32), {"beam_size": beams})
            elapsed = time.perf_counter() - started
            sampler.running = False
            sampler.join()
            time.sleep(5)
            after = _resident(server.pid)
            rows.append(
                {
                    "beams": beams,
                    "seconds_of_audio": len(audio) / 16000,
                    "request_seconds": elapsed,
                    "words": len(text.split()),
                    "idle_mb": {k: v / 2**20 for k, v in idle.items()},
                    "peak_mb": {k: v / 2**20 for k, v in sampler.peak.items()},
                    "after_mb": {k: v / 2**20 for k, v in after.items()},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{len(audio) / 16000:.0f} s of speech in one request, fp32 tiny.en, 2 CPU cores\n")
    print("| beams | request s | decoder peak MB | decoder after MB | all processes peak MB |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['beams']} | {row['request_seconds']:.0f} | {row['peak_mb']['whisper_decoder']:.0f} | "
            f"{row['after_mb']['whisper_decoder']:.0f} | {sum(row['peak_mb'].values()):.0f} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
