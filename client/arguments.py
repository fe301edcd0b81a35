"""What the client commands (``transcribe``, ``stream``, ``eval``) share: the server's connection options,
the decoding options, the client they make, and the readiness check before the first request."""

from __future__ import annotations

import argparse
import sys

from whisper_triton.cli import UsageError
from whisper_triton.client.api import WhisperClient
from whisper_triton.options import DecodingOptions, OptionsError


def add_connection_arguments(
    parser: argparse.ArgumentParser, protocols: bool = True, default_url: str = "localhost:8001"
) -> None:
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


def add_decoding_arguments(parser: argparse.ArgumentParser, timestamps: bool = True) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--beam-size", type=int, default=1, help="1 = greedy (default), up to 16")
    group.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (greedy only)")
    group.add_argument("--initial-prompt", help="text that conditions the decoder (names, spelling)")
    if timestamps:
        group.add_argument("--timestamps", action="store_true", help="timed segments (implied by srt/vtt)")


def decoding_options(args: argparse.Namespace, timestamps: bool | None = None) -> DecodingOptions:
    try:
        return DecodingOptions(
            beam_size=args.beam_size,
            temperature=args.temperature,
            initial_prompt=args.initial_prompt,
            timestamps=timestamps,
        )
    except OptionsError as exc:
        raise UsageError(str(exc)) from None


def connect(args: argparse.Namespace, protocol: str | None = None) -> WhisperClient:
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
        raise UsageError(str(exc)) from None


def server_ready(client: WhisperClient, model: str) -> bool:
    """Whether ``model`` is ready at the server; if not, says so (and how to start one) on stderr."""
    if client.is_ready(model):
        return True
    print(
        f"error: no ready {model!r} model at {client.connection.url} ({client.protocol}); "
        "start a server with whisper-triton serve",
        file=sys.stderr,
    )
    return False
