"""``whisper-triton transcribe``: audio files and folders through a running server, as a resumable job.

Folders are searched recursively (:func:`~whisper_triton.client.jobs.find_inputs`); with ``--output-dir``
or ``--jsonl`` each result is saved as it finishes and a re-run skips what is done
(:mod:`whisper_triton.client.jobs`), else the results go to stdout in input order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from whisper_triton import contract
from whisper_triton.cli import UsageError
from whisper_triton.client.arguments import (
    add_connection_arguments,
    add_decoding_arguments,
    connect,
    decoding_options,
    server_ready,
)
from whisper_triton.client.formats import FORMATS
from whisper_triton.client.jobs import JsonlFile, OutputDir, Stdout, find_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Transcribe audio files and folders (searched recursively) through a running server. "
        "With --output-dir or --jsonl each result is saved as it finishes and a re-run skips what is done."
    )
    parser.add_argument("inputs", nargs="+", help="audio files and folders")
    add_connection_arguments(parser)
    add_decoding_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="txt", help="output format (default txt)")
    outputs = parser.add_mutually_exclusive_group()
    outputs.add_argument("--output-dir", type=Path, help="one file per input (its name, the format's suffix)")
    outputs.add_argument("--jsonl", type=Path, help="one JSON line per input: id, text, segments, seconds")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    options = decoding_options(
        args, timestamps=True if args.timestamps or args.format in ("srt", "vtt") else None
    )
    inputs = find_inputs(args.inputs)
    if not inputs:
        raise UsageError("no audio files found")
    try:
        if args.output_dir is not None:
            sink = OutputDir(args.output_dir, args.format, inputs)
        elif args.jsonl is not None:
            sink = JsonlFile(args.jsonl)
        else:
            sink = Stdout(args.format, inputs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    todo = [item for item in inputs if not sink.done(item)]
    if len(todo) < len(inputs):
        print(f"{len(inputs) - len(todo)} of {len(inputs)} inputs already done: skipped", file=sys.stderr)
    client = connect(args)
    if todo and not server_ready(client, contract.ENSEMBLE_MODEL):
        return 2
    failures = 0
    try:
        with tqdm(total=len(todo), unit="file", disable=None, file=sys.stderr) as bar:
            for result in client.iter_transcribe([item.path for item in todo], options, args.concurrency):
                item = todo[result.index]
                if result.ok:
                    sink.write(item, result.transcription.text, result.transcription.segments, result.seconds)
                else:
                    failures += 1
                    bar.write(f"error: {item.key}: {result.error}", file=sys.stderr)
                    if isinstance(sink, Stdout):
                        sink.skip(item)
                bar.update()
    except KeyboardInterrupt:
        print(
            "interrupted: the finished results are saved; run the same command again to go on",
            file=sys.stderr,
        )
        return 130
    finally:
        sink.close()
    if failures:
        print(f"{failures} of {len(todo)} inputs failed", file=sys.stderr)
    return 1 if failures else 0
