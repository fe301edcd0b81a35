"""Client commands of ``whisper-triton``: ``transcribe`` (files and folders, resumable), ``stream`` (live
audio from a file or the microphone) and ``eval`` (WER/CER/RTF of a deployed server on a data set)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from whisper_triton import contract
from whisper_triton.client.api import WhisperClient
from whisper_triton.client.formats import FORMATS
from whisper_triton.client.stream import DEFAULT_CHUNK_SECONDS, file_chunks
from whisper_triton.options import DecodingOptions, OptionsError

DIM, RESET = "\x1b[2m", "\x1b[0m"
SAVE_CURSOR, RESTORE_AND_CLEAR = "\x1b7", "\x1b8\x1b[J"


def _connection_arguments(parser, protocols=True, default_url="localhost:8001"):
    group = parser.add_argument_group("server")
    group.add_argument(
        "--url", default=default_url, help="host:port (gRPC 8001, HTTP 8000; default %(default)s)"
    )
    if protocols:
        group.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="default grpc")
    group.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    group.add_argument("--ssl", action="store_true", help="TLS (https for HTTP)")
    group.add_argument(
        "--root-certificates", help="PEM file of the CA(s) that signed the server's certificate"
    )
    group.add_argument("--private-key", help="client certificate's key (mutual TLS; PEM)")
    group.add_argument("--certificate-chain", help="client certificate chain (mutual TLS; PEM)")
    if protocols:
        group.add_argument(
            "--insecure", action="store_true", help="HTTP with --ssl: skip the host-name check"
        )


def _option_arguments(parser, timestamps=True):
    group = parser.add_argument_group("decoding")
    group.add_argument("--beam-size", type=int, default=1, help="1 = greedy (default), up to 16")
    group.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (greedy only)")
    group.add_argument("--initial-prompt", help="text that conditions the decoder (names, spelling)")
    if timestamps:
        group.add_argument("--timestamps", action="store_true", help="timed segments (implied by srt/vtt)")


def _options(args, parser, timestamps=None) -> DecodingOptions:
    try:
        return DecodingOptions(
            beam_size=args.beam_size,
            temperature=args.temperature,
            initial_prompt=args.initial_prompt,
            timestamps=timestamps,
        )
    except OptionsError as exc:
        parser.error(str(exc))


def _client(args, parser, protocol=None) -> WhisperClient:
    try:
        return WhisperClient(
            args.url,
            protocol or args.protocol,
            args.timeout,
            ssl=args.ssl,
            root_certificates=args.root_certificates,
            private_key=args.private_key,
            certificate_chain=args.certificate_chain,
            insecure=getattr(args, "insecure", False),
        )
    except ValueError as exc:
        parser.error(str(exc))


def _ready(client: WhisperClient, model: str) -> bool:
    if client.is_ready(model):
        return True
    print(
        f"error: no ready {model!r} model at {client.connection.url} ({client.protocol}); "
        "start a server with whisper-triton serve",
        file=sys.stderr,
    )
    return False


def transcribe(argv) -> int:
    from tqdm import tqdm

    from whisper_triton.client.jobs import JsonlFile, OutputDir, Stdout, find_inputs

    parser = argparse.ArgumentParser(
        prog="whisper-triton transcribe",
        description="Transcribe audio files and folders (searched recursively) through a running server. "
        "With --output-dir or --jsonl each result is saved as it finishes and a re-run skips what is done.",
    )
    parser.add_argument("inputs", nargs="+", help="audio files and folders")
    _connection_arguments(parser)
    _option_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="txt", help="output format (default txt)")
    outputs = parser.add_mutually_exclusive_group()
    outputs.add_argument("--output-dir", type=Path, help="one file per input (its name, the format's suffix)")
    outputs.add_argument("--jsonl", type=Path, help="one JSON line per input: id, text, segments, seconds")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    options = _options(
        args, parser, timestamps=True if args.timestamps or args.format in ("srt", "vtt") else None
    )
    inputs = find_inputs(args.inputs)
    if not inputs:
        parser.error("no audio files found")
    try:
        if args.output_dir is not None:
            sink = OutputDir(args.output_dir, args.format, inputs)
        elif args.jsonl is not None:
            sink = JsonlFile(args.jsonl)
        else:
            sink = Stdout(args.format, inputs)
    except ValueError as exc:
        parser.error(str(exc))
    todo = [item for item in inputs if not sink.done(item)]
    if len(todo) < len(inputs):
        print(f"{len(inputs) - len(todo)} of {len(inputs)} inputs already done: skipped", file=sys.stderr)
    client = _client(args, parser)
    if todo and not _ready(client, contract.ENSEMBLE_MODEL):
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


class _LiveText:
    """Committed words as they arrive; on a terminal the tentative tail follows them, dimmed, and is
    redrawn by every event."""

    def __init__(self, out):
        self.out, self.tty = out, out.isatty()
        self.wrote = False  # committed text is on the line
        self.tail = False  # a tentative tail follows it (the cursor position before it is saved)

    def show(self, event) -> None:
        if self.tail:
            self.out.write(RESTORE_AND_CLEAR)
        if event.committed:
            self.out.write((" " if self.wrote else "") + event.committed)
            self.wrote = True
        self.tail = self.tty and bool(event.tentative) and not event.final
        if self.tail:
            self.out.write(f"{SAVE_CURSOR} {DIM}{event.tentative}{RESET}")
        if event.final:
            self.out.write("\n")
        self.out.flush()


class _Until:
    """The chunks until ``stop`` is set (first Ctrl-C), so the stream ends with its final transcript."""

    def __init__(self, chunks, stop: threading.Event):
        self.chunks, self.stop = chunks, stop

    def __iter__(self):
        for chunk in self.chunks:
            if self.stop.is_set():
                return
            yield chunk


def stream(argv) -> int:
    from tritonclient.utils import InferenceServerException

    from whisper_triton.audio import AudioError, load_audio
    from whisper_triton.client.microphone import MicrophoneError, microphone_chunks

    parser = argparse.ArgumentParser(
        prog="whisper-triton stream",
        description="Live transcription over a gRPC stream: committed words as they are decided "
        "(on a terminal, the tentative rest greyed after them). Ctrl-C ends the stream and prints what "
        "remains.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="an audio file, sent at real time (or --fast)")
    source.add_argument("--mic", action="store_true", help="record from the microphone (the mic extra)")
    parser.add_argument("--fast", action="store_true", help="send the file as fast as the server answers")
    parser.add_argument("--device", help="microphone: input device name or number (default: the system's)")
    parser.add_argument(
        "--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS, help="audio per request (default 1)"
    )
    _connection_arguments(parser, protocols=False)
    _option_arguments(parser, timestamps=False)
    args = parser.parse_args(argv)
    if not 0.1 <= args.chunk_seconds <= 15:
        parser.error("--chunk-seconds must be in [0.1, 15]")
    options = _options(args, parser)
    if args.mic:
        device = int(args.device) if args.device and args.device.isdigit() else args.device
        chunks = microphone_chunks(args.chunk_seconds, device)
        try:
            chunks = _first_then_rest(
                chunks
            )  # opens the device now: a missing one is reported before connecting
        except MicrophoneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        try:
            audio = load_audio(args.file)
        except AudioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        chunks = file_chunks(audio, args.chunk_seconds, realtime=not args.fast)
    client = _client(args, parser, protocol="grpc")
    if not _ready(client, contract.STREAM_MODEL):
        return 2
    stop = threading.Event()

    def first_interrupt(signum, frame):  # the first Ctrl-C ends the stream; a second one stops at once
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, first_interrupt)
    live = _LiveText(sys.stdout)
    try:
        # --fast replays the file chunk by chunk (one request each) as fast as the server answers.
        for event in client.stream(_Until(chunks, stop), options, catch_up=not args.fast):
            live.show(event)
    except InferenceServerException as exc:
        print(f"\nerror: {exc.message()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 0


def _first_then_rest(chunks):
    """Start a generator now (so its set-up errors surface here) without losing its first chunk."""
    first = next(chunks)

    def rest():
        yield first
        yield from chunks

    return rest()


def evaluate(argv) -> int:
    from whisper_triton.client.evaluate import evaluate_server
    from whisper_triton.utterances import DataError, list_utterances

    parser = argparse.ArgumentParser(
        prog="whisper-triton eval",
        description="Score a running server on a data set: WER, CER, RTF; writes metrics.json, "
        "per_utterance.csv, requests.csv, wer_by_length.png and report.md.",
    )
    parser.add_argument("--data", required=True, help="LibriSpeech-layout folder, or a JSONL/CSV manifest")
    parser.add_argument("--output", type=Path, default=Path("eval-results"), help="default ./eval-results")
    parser.add_argument("--limit", type=int, help="the first N utterances only")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    _connection_arguments(parser)
    _option_arguments(parser, timestamps=False)
    args = parser.parse_args(argv)
    options = _options(args, parser)
    try:
        utterances = list_utterances(args.data)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    utterances = utterances[: args.limit] if args.limit else utterances
    client = _client(args, parser)
    if not _ready(client, contract.ENSEMBLE_MODEL):
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


COMMANDS = {"transcribe": transcribe, "stream": stream, "eval": evaluate}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: whisper-triton {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
