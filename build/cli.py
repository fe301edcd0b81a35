"""``whisper-triton build``: a Whisper checkpoint -> a verified Triton model repository (the command line;
:mod:`whisper_triton.build.repository` does the work)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from whisper_triton.build.optimize import PRECISIONS
from whisper_triton.build.triton_config import RUNTIMES, ServingSettings

# ServingSettings fields the command sets, one option each (--max-batch-size for max_batch_size, ...).
_SETTINGS = (
    ("max_batch_size", int, "requests the dynamic batchers group into one execution"),
    ("max_audio_seconds", float, "longer requests are rejected"),
    ("max_audio_bytes", int, "larger AUDIO_BYTES uploads are rejected before they are parsed"),
    (
        "decoder_memory_mb",
        int,
        "memory for one decoder batch (cache and logits); bigger requests decode in several batches",
    ),
    (
        "decoder_instances",
        int,
        "instances of the decoding model: a long request decodes in one while the others keep serving",
    ),
    ("feature_instances", int, "instances of the feature model (audio decoding, VAD, log-mel)"),
    ("threads", int, "ONNX Runtime threads per session"),
    ("max_streams", int, "live streams of whisper_stream at most; more are refused"),
    ("stream_idle_seconds", float, "a stream without a chunk for this long is dropped and its state freed"),
    ("stream_trim_seconds", float, "a stream's buffer is cut at a committed segment once longer than this"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Export a Whisper model to ONNX (optionally INT8 or TensorRT), verify it against PyTorch, "
        "and write a complete Triton model repository."
    )
    parser.add_argument(
        "--model", default="tiny.en", help="model name or directory (default tiny.en, bundled)"
    )
    parser.add_argument(
        "--output", default="model_repository", help="repository directory (default model_repository)"
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="python",
        help="encoder runtime: python (ONNX Runtime in a Python-backend model; CPU tritonserver), "
        "onnxruntime (Triton's onnxruntime backend) or tensorrt (FP16 engine; needs a GPU)",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="weights: fp32, fp16 or int8")
    for field, kind, summary in _SETTINGS:
        parser.add_argument(
            "--" + field.replace("_", "-"),
            type=kind,
            default=getattr(ServingSettings, field),
            help=f"{summary} (default %(default)s)",
        )
    parser.add_argument("--skip-verify", action="store_true", help="skip the parity check against PyTorch")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.build.verify import BuildVerificationError
    from whisper_triton.tensorrt_runtime import TensorRTUnavailable

    started = time.perf_counter()
    try:
        settings = ServingSettings(
            runtime=args.runtime, **{field: getattr(args, field) for field, _, _ in _SETTINGS}
        )
        result = build_model_repository(
            args.model, args.output, args.precision, settings, verify=not args.skip_verify
        )
    except (ValueError, TensorRTUnavailable, BuildVerificationError) as error:
        # What the user can fix (options, model path: ModelLoadError is a ValueError, missing GPU, a
        # model that does not export faithfully): the message alone, not a traceback.
        print(f"whisper-triton build: error: {error}", file=sys.stderr)
        return 2
    print(f"{result.repository}: {result.report.summary()} ({time.perf_counter() - started:.0f} s)")
    return 0
