"""``whisper-triton stream``: live transcription of an audio file or the microphone over one gRPC stream.

Committed words are printed as the server decides them; on a terminal the tentative rest follows them,
greyed, and is redrawn by every answer (:class:`LiveText`). The first Ctrl-C ends the stream, which still
gets its final transcript; a second one stops at once. The protocol is :mod:`whisper_triton.client.stream`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tritonclient.utils import InferenceServerException

from whisper_triton import contract
from whisper_triton.audio import AudioError, load_audio
from whisper_triton.cli import UsageError
from whisper_triton.client.arguments import (
    add_connection_arguments,
    add_decoding_arguments,
    connect,
    decoding_options,
    server_ready,
)
from whisper_triton.client.microphone import MicrophoneError, microphone_chunks
from whisper_triton.client.stream import DEFAULT_CHUNK_SECONDS, file_chunks

DIM, RESET = "\x1b[2m", "\x1b[0m"
SAVE_CURSOR, RESTORE_AND_CLEAR = "\x1b7", "\x1b8\x1b[J"


class LiveText:
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Live transcription over a gRPC stream: committed words as they are decided "
        "(on a terminal, the tentative rest greyed after them). Ctrl-C ends the stream and prints what "
        "remains."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="an audio file, sent at real time (or --fast)")
    source.add_argument("--mic", action="store_true", help="record from the microphone (the mic extra)")
    parser.add_argument("--fast", action="store_true", help="send the file as fast as the server answers")
    parser.add_argument("--device", help="microphone: input device name or number (default: the system's)")
    parser.add_argument(
        "--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS, help="audio per request (default 1)"
    )
    add_connection_arguments(parser, protocols=False)
    add_decoding_arguments(parser, timestamps=False)


def run(args: argparse.Namespace) -> int:
    if not 0.1 <= args.chunk_seconds <= 15:
        raise UsageError("--chunk-seconds must be in [0.1, 15]")
    options = decoding_options(args)
    if args.mic:
        device = int(args.device) if args.device and args.device.isdigit() else args.device
        try:  # opens the device now: a missing one is reported before connecting
            chunks = _first_then_rest(microphone_chunks(args.chunk_seconds, device))
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
    client = connect(args, protocol="grpc")
    if not server_ready(client, contract.STREAM_MODEL):
        return 2
    stop = threading.Event()

    def first_interrupt(signum, frame):  # the first Ctrl-C ends the stream; a second one stops at once
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, first_interrupt)
    live = LiveText(sys.stdout)
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
