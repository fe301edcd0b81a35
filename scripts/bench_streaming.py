"""Streaming benchmark: final WER against offline, commit latency, and concurrent real-time streams.

Runs against any server (``--url host:8001``, a GPU server too) or builds the int8 tiny.en repository and
starts the local CPU server (no ``--url``). Prints tables and writes JSON (default
artifacts/bench_streaming.json).

- Long files: each ``--corpora`` seed's synthetic corpus (40 utterances, Piper and espeak-ng voices, 0.5 s
  apart) joined into one recording of about 2.4 minutes.
- Quality, per chunk size: each file streamed chunk by chunk, the next chunk sent when the previous one
  is answered; final WER against the offline WER of the same file through the `whisper` ensemble
  (timestamps on, as offline long-form transcription runs).
- Commit latency: for every committed word, the audio the server had received when it committed the
  word, minus where the word ends in the audio (its time within its segment, estimated by characters).
  "+ compute" adds the answer's round trip: the delay a real-time speaker sees when the server keeps up.
- Live streams: N streams of the same 75 s paced at real time with the client's catch-up (chunks
  recorded while a decode runs travel together in the next request): commit latency in wall time, how
  long after the audio ended the final answer came, and the audio per request (above the chunk size:
  the server fell behind and the client merged chunks).
- Concurrency: N streams of the first file's first 75 s at once, each chunk sent when the previous is answered; a
  stream's RTF is its wall time over its audio time. N streams are sustained in real time when every
  stream's RTF is below 1 (each second of audio takes less than a second to serve).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from whisper_triton.paths import cache_dir  # noqa: E402

CORPUS_SIZE = 40


def long_files(seeds: list[int]) -> list[tuple[np.ndarray, str]]:
    from whisper_triton.corpus import concatenate_utterances, read_manifest, synthesize_corpus

    files = []
    for seed in seeds:
        folder = cache_dir("test-corpus") if seed == 0 else cache_dir(f"stream-corpus-{seed}")
        entries = read_manifest(synthesize_corpus(folder, num_utterances=CORPUS_SIZE, seed=seed))
        audio, text = concatenate_utterances(entries)
        files.append((audio.astype(np.float32), text))
    return files


def lockstep(audio: np.ndarray, chunk_seconds: float, answered: threading.Semaphore):
    """The file's chunks, each one given only once the previous chunk was answered."""
    from whisper_triton.client.stream import file_chunks

    for chunk in file_chunks(audio, chunk_seconds):
        answered.acquire()
        yield chunk


def run_stream(client, audio: np.ndarray, chunk_seconds: float) -> dict:
    answered = threading.Semaphore(1)
    events, latencies, started = [], [], time.perf_counter()
    for event in client.stream(lockstep(audio, chunk_seconds, answered), catch_up=False):
        events.append(event)
        answered.release()
        for piece in (s for s in event.segments if s["committed"]):
            for end in _word_ends(piece):
                latencies.append((event.audio_seconds - end, event.latency_s))
    return {
        "text": events[-1].text,
        "wall": time.perf_counter() - started,
        "latencies": latencies,
        "round_trips": [e.latency_s for e in events[:-1]],
    }


def _word_ends(piece: dict) -> list[float]:
    """Each word's end within a committed piece, by its position in the piece's characters."""
    text = piece["text"]
    spans = [m.end() for m in re.finditer(r"\S+", text)]
    return [piece["start"] + (piece["end"] - piece["start"]) * end / len(text) for end in spans]


def quality(client, files, chunk_sizes: list[float]) -> list[dict]:
    from whisper_triton.metrics import compute_wer

    truths = [text for _, text in files]
    offline = [client.transcribe(audio, {"timestamps": True}).text for audio, _ in files]
    offline_wer = 100 * compute_wer(offline, truths)
    rows = []
    for chunk in chunk_sizes:
        runs = [run_stream(client, audio, chunk) for audio, _ in files]
        audio_latency = [a for run in runs for a, _ in run["latencies"]]
        total_latency = [a + r for run in runs for a, r in run["latencies"]]
        rows.append(
            {
                "chunk_s": chunk,
                "offline_wer": offline_wer,
                "stream_wer": 100 * compute_wer([run["text"] for run in runs], truths),
                "latency_median_s": float(np.median(audio_latency)),
                "latency_p90_s": float(np.percentile(audio_latency, 90)),
                "with_compute_median_s": float(np.median(total_latency)),
                "with_compute_p90_s": float(np.percentile(total_latency, 90)),
                "round_trip_median_s": float(np.median([t for run in runs for t in run["round_trips"]])),
                "rtf_one_stream": sum(run["wall"] for run in runs) / sum(len(a) / 16000 for a, _ in files),
            }
        )
        print(_quality_table(rows[-1:], header=len(rows) == 1), flush=True)
    return rows


def concurrency(client, audio: np.ndarray, chunk: float, counts: list[int]) -> list[dict]:
    rows = []
    seconds = len(audio) / 16000
    for count in counts:
        with ThreadPoolExecutor(count) as pool:
            runs = list(pool.map(lambda _: run_stream(client, audio, chunk), range(count)))
        rtfs = [run["wall"] / seconds for run in runs]
        trips = [t for run in runs for t in run["round_trips"]]
        rows.append(
            {
                "streams": count,
                "chunk_s": chunk,
                "rtf_max": max(rtfs),
                "rtf_mean": float(np.mean(rtfs)),
                "round_trip_median_s": float(np.median(trips)),
                "round_trip_p90_s": float(np.percentile(trips, 90)),
                "real_time": max(rtfs) < 1.0,
            }
        )
        print(_concurrency_table(rows[-1:], header=len(rows) == 1), flush=True)
    return rows


def paced(client, audio: np.ndarray, chunk: float, counts: list[int]) -> list[dict]:
    """N live streams at once: each file paced at real time (a chunk given when fully "recorded"), with
    the client's catch-up (chunks recorded during a decode travel together in the next request). The
    server keeps up with N streams when the final answer comes soon after the audio ends; commit latency
    is wall time from a word's end in the audio to the answer that committed it."""
    from whisper_triton.client.stream import file_chunks

    seconds = len(audio) / 16000

    def one(_):
        started, latencies, requests, last = time.perf_counter(), [], 0, 0.0
        for event in client.stream(file_chunks(audio, chunk, realtime=True), catch_up=True):
            last = time.perf_counter() - started
            requests += 1
            for piece in (s for s in event.segments if s["committed"]):
                latencies += [last - end for end in _word_ends(piece)]
        return {"final_lag": last - seconds, "latencies": latencies, "requests": requests - 1}

    rows = []
    for count in counts:
        with ThreadPoolExecutor(count) as pool:
            runs = list(pool.map(one, range(count)))
        latencies = [x for run in runs for x in run["latencies"]]
        rows.append(
            {
                "streams": count,
                "chunk_s": chunk,
                "latency_median_s": float(np.median(latencies)),
                "latency_p90_s": float(np.percentile(latencies, 90)),
                "final_lag_max_s": max(run["final_lag"] for run in runs),
                "audio_per_request_s": seconds * count / sum(run["requests"] for run in runs),
            }
        )
        print(_paced_table(rows[-1:], header=len(rows) == 1), flush=True)
    return rows


def _paced_table(rows, header=True) -> str:
    lines = []
    if header:
        lines += [
            "| live streams | chunk s | commit latency median / p90 s | final answer after the audio s | audio per request s |",
            "|--------------|---------|-------------------------------|--------------------------------|---------------------|",
        ]
    for r in rows:
        lines.append(
            f"| {r['streams']:12d} | {r['chunk_s']:7.1f} | {r['latency_median_s']:13.2f} / {r['latency_p90_s']:5.2f}        | "
            f"{r['final_lag_max_s']:30.2f} | {r['audio_per_request_s']:19.2f} |"
        )
    return "\n".join(lines)


def batching(url: str) -> dict:
    """Requests per execution of the streaming, encoder and decoder models over the whole run: above 1,
    chunks of several streams were served together."""
    import tritonclient.grpc as grpcclient

    from whisper_triton import contract

    client = grpcclient.InferenceServerClient(url)
    ratios = {}
    for model in (contract.STREAM_MODEL, contract.ENCODER_MODEL, contract.DECODER_MODEL):
        stats = client.get_inference_statistics(model).model_stats[0]
        ratios[model] = round(stats.inference_stats.success.count / max(1, stats.execution_count), 2)
    return ratios


def _quality_table(rows, header=True) -> str:
    lines = []
    if header:
        lines += [
            "| chunk s | offline WER % | stream WER % | commit latency median / p90 s | + compute median / p90 s | round trip s | RTF 1 stream |",
            "|---------|---------------|--------------|-------------------------------|--------------------------|--------------|--------------|",
        ]
    for r in rows:
        lines.append(
            f"| {r['chunk_s']:7.1f} | {r['offline_wer']:13.2f} | {r['stream_wer']:12.2f} | "
            f"{r['latency_median_s']:13.2f} / {r['latency_p90_s']:4.2f}         | "
            f"{r['with_compute_median_s']:10.2f} / {r['with_compute_p90_s']:4.2f}          | "
            f"{r['round_trip_median_s']:12.2f} | {r['rtf_one_stream']:12.2f} |"
        )
    return "\n".join(lines)


def _concurrency_table(rows, header=True) -> str:
    lines = []
    if header:
        lines += [
            "| streams | chunk s | RTF max | RTF mean | round trip median / p90 s | real time |",
            "|---------|---------|---------|----------|---------------------------|-----------|",
        ]
    for r in rows:
        lines.append(
            f"| {r['streams']:7d} | {r['chunk_s']:7.1f} | {r['rtf_max']:7.2f} | {r['rtf_mean']:8.2f} | "
            f"{r['round_trip_median_s']:13.2f} / {r['round_trip_p90_s']:4.2f}     | "
            f"{'yes' if r['real_time'] else 'no':>9} |"
        )
    return "\n".join(lines)


def local_server(precision: str, max_streams: int, repository: Path | None):
    """Build (once) and start the local CPU server; the TritonServer context."""
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.build.triton_config import ServingSettings
    from whisper_triton.server.launcher import TritonServer

    repository = repository or cache_dir(f"bench-stream-repository-{precision}")
    settings = ServingSettings(max_streams=max(max_streams, ServingSettings.max_streams))
    build_model_repository("tiny.en", repository, precision=precision, settings=settings)
    return TritonServer(repository, log_path=repository / "server.log")


def _save(results: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="gRPC host:port of a running server (default: start the local one)")
    parser.add_argument("--precision", default="int8", help="the local server's build (default int8)")
    parser.add_argument("--model-repository", type=Path, help="local server: this repository, rebuilt")
    parser.add_argument(
        "--corpora", type=int, nargs="+", default=[0, 1], help="corpus seeds: one long file each"
    )
    parser.add_argument(
        "--chunk-seconds", type=float, nargs="*", default=[0.5, 1.0, 2.0], help="quality runs (none: skip)"
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument(
        "--concurrency-chunk",
        type=float,
        nargs="+",
        default=[1.0, 2.0],
        help="chunk sizes of the concurrency runs",
    )
    parser.add_argument(
        "--concurrency-seconds", type=float, default=75.0, help="audio per stream in the concurrency runs"
    )
    parser.add_argument(
        "--paced-streams", type=int, nargs="*", default=[1, 2, 3], help="live streams paced at real time"
    )
    parser.add_argument("--paced-chunk", type=float, default=1.0, help="chunk size of the paced streams")
    parser.add_argument("--output", type=Path, default=REPO / "artifacts" / "bench_streaming.json")
    args = parser.parse_args(argv)

    from whisper_triton.client.api import WhisperClient

    files = long_files(args.corpora)
    print(f"{len(files)} long files, {sum(len(a) for a, _ in files) / 16000:.0f} s of audio", flush=True)
    server = None if args.url else local_server(args.precision, max(args.streams), args.model_repository)
    try:
        if server is not None:
            server.start()
        url = args.url or server.url_grpc
        client = WhisperClient(url, timeout_s=600)
        results = {"url": url, "precision": None if args.url else args.precision}
        results["quality"] = quality(client, files, args.chunk_seconds) if args.chunk_seconds else []
        _save(results, args.output)  # what is measured is kept, whatever happens next
        audio = files[0][0][: round(args.concurrency_seconds * 16000)]
        results["concurrency"] = [
            row for chunk in args.concurrency_chunk for row in concurrency(client, audio, chunk, args.streams)
        ]
        _save(results, args.output)
        results["paced"] = paced(client, audio, args.paced_chunk, args.paced_streams)
        results["batching"] = batching(url)
        print("requests per execution:", results["batching"], flush=True)
    finally:
        if server is not None:
            server.stop()
    _save(results, args.output)
    print()
    if results["quality"]:
        print(_quality_table(results["quality"]))
        print()
    print(_concurrency_table(results["concurrency"]))
    if results["paced"]:
        print()
        print(_paced_table(results["paced"]))
    print(f"\nJSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
