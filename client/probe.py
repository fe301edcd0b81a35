"""``whisper-triton probe``: a readiness check that transcribes, for Kubernetes exec probes and scripts.

Triton's own ``/v2/health/ready`` says whether models are loaded, not whether they work: a model whose
Python stub died stays "ready" while every request fails. This sends one second of silence through the
`whisper` ensemble (every model runs: features, encoder, decoding) and exits 0 only on an answer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from whisper_triton.constants import SAMPLE_RATE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n")[0]
    parser.add_argument("--url", default="localhost:8001", help="gRPC address (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from whisper_triton.client.api import WhisperClient

    try:
        WhisperClient(args.url, timeout_s=args.timeout).transcribe(np.zeros(SAMPLE_RATE, np.float32))
    except Exception as error:  # noqa: BLE001 - any failure is "not ready"; say which
        print(f"whisper-triton probe: {args.url}: {error}", file=sys.stderr)
        return 1
    return 0
