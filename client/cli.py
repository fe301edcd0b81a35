"""whisper-triton transcribe FILE... : transcribe audio files through a running Triton server."""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from whisper_triton.client.api import WhisperClient
from whisper_triton.client.formats import FORMATS, render
from whisper_triton.options import DecodingOptions, OptionsError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="whisper-triton", description="Whisper over Triton: client commands."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    transcribe = commands.add_parser("transcribe", help="transcribe audio files (wav, flac, mp3, ogg, ...)")
    transcribe.add_argument("files", nargs="+", help="audio files")
    transcribe.add_argument("--url", default="localhost:8001", help="server address (gRPC 8001, HTTP 8000)")
    transcribe.add_argument(
        "--protocol", choices=("grpc", "http"), default="grpc", help="transport (default grpc)"
    )
    transcribe.add_argument("--beam-size", type=int, default=1, help="1 = greedy (default), up to 16")
    transcribe.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature (greedy only)"
    )
    transcribe.add_argument("--timestamps", action="store_true", help="timed segments (implied by srt/vtt)")
    transcribe.add_argument("--initial-prompt", help="text that conditions the decoder (names, spelling)")
    transcribe.add_argument("--format", choices=FORMATS, default="txt", help="output format (default txt)")
    transcribe.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    args = parser.parse_args(argv)

    try:
        options = DecodingOptions(
            beam_size=args.beam_size,
            temperature=args.temperature,
            timestamps=args.timestamps or args.format in ("srt", "vtt"),
            initial_prompt=args.initial_prompt,
        )
    except OptionsError as exc:
        parser.error(str(exc))
    client = WhisperClient(args.url, args.protocol)
    if not client.is_ready():
        print(
            f"error: no ready 'whisper' model at {args.url} ({args.protocol}); start it with make serve",
            file=sys.stderr,
        )
        return 2

    def run(path):
        started = time.perf_counter()
        try:
            return path, client.transcribe(path, options), time.perf_counter() - started, None
        except Exception as exc:  # noqa: BLE001 - report per file, keep the finished results
            return path, None, time.perf_counter() - started, exc

    failures = 0
    with ThreadPoolExecutor(max(1, args.concurrency)) as pool:
        for path, result, seconds, error in pool.map(run, args.files):
            if error is not None:
                failures += 1
                print(f"error: {path}: {error}", file=sys.stderr)
                continue
            if len(args.files) > 1:
                print(f"==> {path} ({seconds:.2f} s)")
            sys.stdout.write(render(result.text, result.segments, args.format))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
