"""``whisper-triton``: the one command-line entry point (``python -m whisper_triton`` is the same).

Each subcommand lives with the part it belongs to and is imported only when used, so the client-only
install (``pip install 'whisper-triton[client]'``) runs ``transcribe``, ``stream`` and ``eval`` without torch, ONNX or Triton's
server, and ``whisper-triton --help`` starts instantly. Training keeps its own ``python -m training``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module with main(argv), whether main expects the subcommand name first, summary)
COMMANDS: dict[str, tuple[str, bool, str]] = {
    "build": (
        "whisper_triton.build.cli",
        False,
        "export a checkpoint to ONNX/TensorRT, verify it, write a Triton model repository",
    ),
    "serve": ("whisper_triton.build.server", False, "run the local CPU tritonserver for a model repository"),
    "runtime": ("whisper_triton.build.triton_runtime", False, "prepare the local CPU Triton runtime"),
    "transcribe": (
        "whisper_triton.client.cli",
        True,
        "transcribe audio files and folders through a running server (resumable)",
    ),
    "stream": ("whisper_triton.client.cli", True, "live transcription of a file or the microphone (gRPC)"),
    "eval": ("whisper_triton.client.cli", True, "WER/CER/RTF of a running server on a data set"),
    "perf": ("whisper_triton.client.perf_analyzer", False, "Triton's perf_analyzer against a running server"),
    "probe": (
        "whisper_triton.client.probe",
        False,
        "exit 0 only if a running server transcribes (readiness)",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: whisper-triton COMMAND [options]   (whisper-triton COMMAND --help for its options)", ""]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    lines += ["", "Training and evaluation: python -m training --help"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"whisper-triton: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, wants_name, _ = COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:  # a part whose extra is not installed
        extra = {"build": "build", "serve": "build", "runtime": "build"}.get(command, "client")
        print(
            f"whisper-triton {command}: {error.name or error} is not installed; "
            f"pip install 'whisper-triton[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return module.main([command, *rest] if wants_name else rest)
