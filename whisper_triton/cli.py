"""``whisper-triton``: the one command-line entry point (``python -m whisper_triton`` is the same).

:data:`COMMANDS` is the one table of subcommands. Each names the module that implements it, which
provides ``add_arguments(parser)`` (its options, on its own subparser) and ``run(args) -> int`` (the exit
status). A module is imported only when its subcommand runs, so the client-only install
(``pip install 'whisper-triton[client]'``) runs ``transcribe``, ``stream`` and ``eval`` without torch,
ONNX or the server code, and ``whisper-triton --help`` (the summaries here) starts instantly. A module
whose extra is not installed is reported in one line that names the extra. Training keeps its own
``python -m training``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

PROG = "whisper-triton"


@dataclass(frozen=True)
class Command:
    """One subcommand: where it is implemented, its line in the listing, the extra it needs."""

    module: str  # provides add_arguments(parser) and run(args) -> int
    summary: str  # the line of `whisper-triton --help`
    extra: str  # the install extra its imports need


COMMANDS: dict[str, Command] = {
    "build": Command(
        "whisper_triton.build.cli",
        "export a checkpoint to ONNX/TensorRT, verify it, write a Triton model repository",
        "build",
    ),
    "serve": Command(
        "whisper_triton.server.supervisor", "run the local CPU tritonserver for a model repository", "build"
    ),
    "runtime": Command("whisper_triton.server.runtime", "prepare the local CPU Triton runtime", "build"),
    "transcribe": Command(
        "whisper_triton.client.transcribe",
        "transcribe audio files and folders through a running server (resumable)",
        "client",
    ),
    "stream": Command(
        "whisper_triton.client.live", "live transcription of a file or the microphone (gRPC)", "client"
    ),
    "eval": Command(
        "whisper_triton.client.evaluate", "WER/CER/RTF of a running server on a data set", "client"
    ),
    "perf": Command(
        "whisper_triton.client.perf_analyzer", "Triton's perf_analyzer against a running server", "client"
    ),
    "probe": Command(
        "whisper_triton.client.probe", "exit 0 only if a running server transcribes (readiness)", "client"
    ),
}


class UsageError(Exception):
    """A mistake in the command line that a subcommand finds after parsing (a bad value, no inputs):
    reported as argparse reports its own (the subcommand's usage, then the message) with exit status 2."""


def _command_list() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["commands:"] + [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def build_parser(
    command: str | None = None, module: ModuleType | None = None
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The parser of the whole command line, and the subparser of ``command``.

    Every subcommand gets a subparser, but only ``command``'s gets its options, from ``module`` (its
    implementation, imported by the caller): the others are not imported at all.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} COMMAND [options]   ({PROG} COMMAND --help for its options)",
        description=_command_list(),
        epilog="Training and evaluation: python -m training --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The commands are listed by the description (argparse would indent them under a COMMAND argument).
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help=argparse.SUPPRESS
    )
    chosen = None
    for name in COMMANDS:
        subparser = subparsers.add_parser(name, prog=f"{PROG} {name}")
        if name == command:
            module.add_arguments(subparser)
            chosen = subparser
    return parser, chosen


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv[0] if argv else None
    if name not in COMMANDS:
        parser, _ = build_parser()
        if not argv or name in ("-h", "--help"):
            parser.print_help()
            return 0 if argv else 2
        if not name.startswith("-"):
            print(f"{PROG}: unknown command {name!r}\n\n{parser.format_help()}", end="", file=sys.stderr)
            return 2
        parser.error(f"unrecognized arguments: {' '.join(argv)}")  # an option before any command
    command = COMMANDS[name]
    try:
        module = importlib.import_module(command.module)
    except ImportError as error:  # a part whose extra is not installed
        print(
            f"{PROG} {name}: {error.name or error} is not installed; pip install 'whisper-triton[{command.extra}]'",
            file=sys.stderr,
        )
        return 2
    parser, subparser = build_parser(name, module)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # what parse_args would say, but under the subcommand's name and usage
        subparser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return module.run(args)
    except UsageError as error:
        subparser.error(str(error))
