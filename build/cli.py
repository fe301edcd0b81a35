"""whisper-triton build: a Whisper checkpoint -> a verified Triton model repository."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from whisper_triton.build.optimize import PRECISIONS
from whisper_triton.build.triton_config import RUNTIMES, ServingSettings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="whisper-triton build",
        description="Export a Whisper model to ONNX (optionally INT8 or TensorRT), verify it against PyTorch, "
        "and write a complete Triton model repository.",
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
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=ServingSettings.max_batch_size,
        help="requests the dynamic batchers group into one execution",
    )
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=ServingSettings.max_audio_seconds,
        help="longer requests are rejected",
    )
    parser.add_argument(
        "--max-audio-bytes",
        type=int,
        default=ServingSettings.max_audio_bytes,
        help="larger AUDIO_BYTES uploads are rejected before they are parsed",
    )
    parser.add_argument(
        "--decoder-memory-mb",
        type=int,
        default=ServingSettings.decoder_memory_mb,
        help="memory for one decoder batch (cache and logits); bigger requests decode in several batches",
    )
    parser.add_argument(
        "--threads", type=int, default=ServingSettings.threads, help="ONNX Runtime threads per session"
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=ServingSettings.max_streams,
        help="live streams of whisper_stream at most (default %(default)s); more are refused",
    )
    parser.add_argument(
        "--stream-idle-seconds",
        type=float,
        default=ServingSettings.stream_idle_seconds,
        help="a stream without a chunk for this long is dropped and its state freed (default %(default)s)",
    )
    parser.add_argument(
        "--stream-trim-seconds",
        type=float,
        default=ServingSettings.stream_trim_seconds,
        help="a stream's buffer is cut at a committed segment once longer than this (default %(default)s)",
    )
    parser.add_argument("--skip-verify", action="store_true", help="skip the parity check against PyTorch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.build.verify import BuildVerificationError
    from whisper_triton.tensorrt_runtime import TensorRTUnavailable

    started = time.perf_counter()
    try:
        settings = ServingSettings(
            runtime=args.runtime,
            max_batch_size=args.max_batch_size,
            max_audio_seconds=args.max_audio_seconds,
            max_audio_bytes=args.max_audio_bytes,
            decoder_memory_mb=args.decoder_memory_mb,
            threads=args.threads,
            max_streams=args.max_streams,
            stream_idle_seconds=args.stream_idle_seconds,
            stream_trim_seconds=args.stream_trim_seconds,
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


if __name__ == "__main__":
    sys.exit(main())
