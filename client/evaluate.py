"""``whisper-triton eval``: score a deployed server on a data set (WER, CER, RTF) through its public API.

The utterances of a LibriSpeech-layout folder or a JSONL/CSV manifest (``whisper_triton.utterances``,
the reader training uses) are sent as their files, ``concurrency`` at a time, exactly as clients send
them; the transcripts are scored by ``whisper_triton.metrics`` (training's metrics). Written to the
output folder: ``metrics.json`` (the metrics plus a ``serving`` section), ``per_utterance.csv``,
``wer_by_length.png``, ``requests.csv`` (each request's time, or its error) and ``report.md``.

RTF is wall time over audio time for the whole run at that concurrency (what a batch job sees);
latency is each request's own time.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from whisper_triton import contract
from whisper_triton.audio import load_audio
from whisper_triton.client.api import WhisperClient
from whisper_triton.client.arguments import (
    add_connection_arguments,
    add_decoding_arguments,
    connect,
    decoding_options,
    server_ready,
)
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.metrics import METRICS_FILE, create_evaluation_report, evaluate_model
from whisper_triton.options import DecodingOptions
from whisper_triton.utterances import DataError, Utterance, list_utterances

REQUESTS_FILE = "requests.csv"
REPORT_FILE = "report.md"


def audio_seconds(utterance: Utterance) -> float:
    """The utterance's duration: from its manifest, else its file header (decoded when soundfile cannot
    read the header, e.g. m4a)."""
    if utterance.duration is not None:
        return float(utterance.duration)
    try:
        return float(sf.info(utterance.audio_filepath).duration)
    except (RuntimeError, sf.LibsndfileError):
        return len(load_audio(utterance.audio_filepath)) / SAMPLE_RATE


def evaluate_server(
    client: WhisperClient,
    utterances: list[Utterance],
    output_dir: Path,
    options: DecodingOptions | None = None,
    concurrency: int = 4,
    title: str = "whisper-triton eval",
) -> dict:
    """Transcribe ``utterances`` through the server, score them, write the files; the metrics dict.

    Utterances whose request failed are listed in ``serving.failed`` and ``requests.csv`` and left out of
    the scores (a server error is not a transcription error)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    durations = [audio_seconds(u) for u in utterances]
    started = time.perf_counter()
    results = client.transcribe_many([u.audio_filepath for u in utterances], options, concurrency)
    wall = time.perf_counter() - started
    ok = [r.index for r in results if r.ok]
    if not ok:
        raise RuntimeError(f"every request failed; the first: {results[0].error}")
    metrics = evaluate_model(
        [results[i].transcription.text for i in ok],
        [utterances[i].text for i in ok],
        output_dir,
        ids=[utterances[i].id for i in ok],
        durations=[durations[i] for i in ok],
    )
    latencies = np.array([results[i].seconds for i in ok])
    metrics["serving"] = {
        "url": client.connection.url,
        "protocol": client.protocol,
        "concurrency": concurrency,
        "options": (options or DecodingOptions()).to_json(),
        "utterances": len(utterances),
        "audio_seconds": round(sum(durations), 3),
        "wall_seconds": round(wall, 3),
        "rtf": wall / sum(durations),
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p90_s": float(np.percentile(latencies, 90)),
        "failed": [{"id": utterances[r.index].id, "error": r.error} for r in results if not r.ok],
    }
    metrics["files"]["requests_csv"] = str(output_dir / REQUESTS_FILE)
    _write_requests(output_dir / REQUESTS_FILE, utterances, durations, results)
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    report = create_evaluation_report(metrics, output_dir / REPORT_FILE, title=title)
    with report.open("a", encoding="utf-8") as handle:
        handle.write("\n" + _serving_section(metrics["serving"]))
    metrics["files"]["report_md"] = str(report)
    return metrics


def _write_requests(path: Path, utterances, durations, results) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "audio_filepath", "duration_s", "request_s", "error"])
        for utterance, duration, result in zip(utterances, durations, results, strict=True):
            writer.writerow(
                [
                    utterance.id,
                    utterance.audio_filepath,
                    round(duration, 3),
                    round(result.seconds, 3),
                    result.error or "",
                ]
            )


def _serving_section(serving: dict) -> str:
    rows = [
        ("Server", f"{serving['url']} ({serving['protocol']})"),
        ("Requests in flight", serving["concurrency"]),
        ("Audio", f"{serving['audio_seconds']:.1f} s in {serving['utterances']} utterances"),
        ("Wall time", f"{serving['wall_seconds']:.1f} s"),
        ("Real-time factor (wall / audio)", f"{serving['rtf']:.3f}"),
        ("Request latency p50 / p90", f"{serving['latency_p50_s']:.2f} s / {serving['latency_p90_s']:.2f} s"),
        ("Failed requests", len(serving["failed"])),
    ]
    lines = ["## Serving", "", "| Measure | Value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    for failure in serving["failed"]:
        lines.append(f"\n- failed: {failure['id']}: {failure['error']}")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``whisper-triton eval``: its options."""
    parser.description = (
        "Score a running server on a data set: WER, CER, RTF; writes metrics.json, "
        "per_utterance.csv, requests.csv, wer_by_length.png and report.md."
    )
    parser.add_argument("--data", required=True, help="LibriSpeech-layout folder, or a JSONL/CSV manifest")
    parser.add_argument("--output", type=Path, default=Path("eval-results"), help="default ./eval-results")
    parser.add_argument("--limit", type=int, help="the first N utterances only")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    add_connection_arguments(parser)
    add_decoding_arguments(parser, timestamps=False)


def run(args: argparse.Namespace) -> int:
    """``whisper-triton eval``: score the server, write the report, print the headline numbers."""
    options = decoding_options(args)
    try:
        utterances = list_utterances(args.data)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    utterances = utterances[: args.limit] if args.limit else utterances
    client = connect(args)
    if not server_ready(client, contract.ENSEMBLE_MODEL):
        return 2
    title = f"whisper-triton eval: {args.data} through {args.url}"
    try:
        metrics = evaluate_server(client, utterances, args.output, options, args.concurrency, title)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    serving = metrics["serving"]
    print(
        f"{metrics['num_utterances']} utterances ({serving['audio_seconds']:.1f} s of audio): "
        f"WER {metrics['wer']:.2%}, CER {metrics['cer']:.2%}, RTF {serving['rtf']:.3f} "
        f"(concurrency {serving['concurrency']}); report: {metrics['files']['report_md']}"
    )
    if serving["failed"]:
        print(
            f"{len(serving['failed'])} requests failed (see {metrics['files']['requests_csv']})",
            file=sys.stderr,
        )
        return 1
    return 0
