"""``whisper-triton serve``: run the local CPU tritonserver for a model repository until Ctrl-C.

The server (:class:`~whisper_triton.server.launcher.TritonServer`) runs in the foreground with its log
printed as it grows, and is restarted when it or one of its model stubs dies (:func:`supervise`), up to
:data:`MAX_RESTARTS` times in :data:`RESTART_WINDOW_S`. ``make serve`` and the CPU Docker image run it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from whisper_triton.server.launcher import ADMIN_HEADER, GRPC_ADMIN_HEADER, TritonServer, TritonServerError
from whisper_triton.server.runtime import TritonRuntimeError

RESTART_WINDOW_S = 300.0  # more than MAX_RESTARTS restarts within this window: give up (a crash loop)
MAX_RESTARTS = 5


def supervise(server: TritonServer) -> int:
    """Print the server log as it grows; restart the server when it or one of its model stubs dies.

    Triton 2.51 neither replaces a Python-backend stub that died (kill -9, out of memory) nor reports
    it: the server stays "ready" while every request to that model fails. A restart replaces every
    stub; meanwhile clients get connection errors at once (never a hang) and readiness probes fail.
    """
    restarts: list[float] = []
    with open(server.log_path, "rb") as log:
        while True:
            chunk = log.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
                continue
            dead = server.dead_stubs()
            if server.is_alive() and not dead:
                time.sleep(0.2)
                continue
            reason = (
                f"model stub process(es) {dead} died"
                if dead
                else f"tritonserver exited ({server.returncode})"
            )
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(restarts) > MAX_RESTARTS:
                print(
                    f"{reason}; {MAX_RESTARTS} restarts in {RESTART_WINDOW_S:.0f} s: giving up",
                    file=sys.stderr,
                )
                return 1
            print(f"{reason}: restarting tritonserver", file=sys.stderr, flush=True)
            server.restart()
            print(f"ready again: HTTP {server.url_http}, gRPC {server.url_grpc}", file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start and stop a real ``tritonserver`` for a model repository: for tests, demos and ``make serve``."
    )
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default %(default)s: this machine only; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--model-control-mode", choices=("none", "explicit"), default="none")
    parser.add_argument("--load-model", action="append", default=[], help="with explicit mode; repeatable")
    parser.add_argument("--log-file", type=Path, help="default: <cache>/triton/logs/tritonserver-PORT.log")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds (%(default)s)")
    parser.add_argument(
        "--admin-key",
        default=os.environ.get("WHISPER_TRITON_ADMIN_KEY"),
        help=f"model control, shared memory, logging and trace need this key in the header {ADMIN_HEADER} "
        f"(HTTP) or {GRPC_ADMIN_HEADER} (gRPC metadata) (default: $WHISPER_TRITON_ADMIN_KEY; unset: those "
        "APIs are closed)",
    )


def run(args: argparse.Namespace) -> int:
    # Ctrl-C and SIGTERM (docker stop, kill) both stop the server through KeyboardInterrupt; SIGINT is set
    # explicitly because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = TritonServer(
        args.model_repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        model_control_mode=args.model_control_mode,
        load_models=args.load_model,
        log_path=args.log_file,
        startup_timeout_s=args.startup_timeout,
        admin_key=args.admin_key,
    )
    try:
        print(f"starting tritonserver for {server.model_repository} ...", flush=True)
        with server:
            print(
                f"ready (bound to {server.host}): HTTP {server.url_http}, gRPC {server.url_grpc}, "
                f"metrics {server.url_metrics} (log: {server.log_path}); Ctrl-C stops it",
                flush=True,
            )
            return supervise(server)  # returns only when it gives up: a failure
    except (TritonRuntimeError, TritonServerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 0
