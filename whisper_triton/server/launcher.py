"""Start and stop a real ``tritonserver`` for a model repository: for tests, demos and the ``serve`` command.

:class:`TritonServer` runs the CPU server prepared by :mod:`whisper_triton.server.runtime` in its own
process group (so that stopping it also stops the Python-backend stub processes it forked), on free loopback ports
unless told otherwise, with its output in a log file, and waits until ``/v2/health/ready`` answers. When
the server dies or is not ready in time, :class:`TritonServerError` carries the end of the log and each
model's load error, which is where the real cause is. Admin APIs answer only requests that carry the
server's key in the :data:`ADMIN_HEADER` header.

``whisper-triton serve`` (:mod:`whisper_triton.server.supervisor`) runs it in the foreground and
restarts it when it or a model stub dies.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

from whisper_triton.server.processes import (
    POLL_INTERVAL_S,
    STUB_BINARY,
    process_alive,
    process_group_exists,
    remove_orphans,
    remove_shared_memory,
    stub_processes,
)
from whisper_triton.server.runtime import TritonRuntime, prepare_triton_runtime

ModelControlMode = Literal["none", "explicit"]
ADMIN_HEADER = "whisper-triton-admin-key"  # the HTTP header that carries the admin key
# tritonserver's gRPC frontend looks for a restricted protocol's header under its own prefix.
GRPC_ADMIN_HEADER = "triton-grpc-protocol-" + ADMIN_HEADER
ADMIN_APIS = ("model-repository", "shared-memory", "logging", "trace")  # what only an operator may do
RESTART_GRACE_S = 5.0  # how long a restart lets the old server finish before killing it


class TritonServerError(RuntimeError):
    """tritonserver did not start or did not become ready; the message holds its log and load errors."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do (tritonserver too): connections of a stopped server lingering in TIME_WAIT do not
        # block a new listener, while a listening socket still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class TritonServer:
    """A ``tritonserver`` process serving ``model_repository``; a context manager.

    ``model_control_mode="none"`` loads every model at start (what a deployment does);
    ``"explicit"`` loads only ``load_models`` (``"*"`` for all) and lets clients load and unload models,
    which tests use to load just what they need. Ports left as None are free ports chosen at start;
    ``host`` is the address the server binds (``0.0.0.0`` for every interface); the ``url_*`` properties
    always point at a loopback address when ``host`` is a wildcard.

    The server reads the repository as it is (it may be read-only); its models import their third-party
    packages from ``runtime.python_path`` (this interpreter's environment by default).
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        runtime: TritonRuntime | None = None,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        model_control_mode: ModelControlMode = "none",
        load_models: Sequence[str] = (),
        log_path: Path | None = None,
        startup_timeout_s: float = 120.0,
        extra_args: Sequence[str] = (),
        admin_key: str | None = None,
    ):
        if model_control_mode not in ("none", "explicit"):
            raise ValueError(f"model_control_mode must be 'none' or 'explicit', not {model_control_mode!r}")
        if load_models and model_control_mode != "explicit":
            raise ValueError(
                "load_models needs model_control_mode='explicit' (mode 'none' loads every model)"
            )
        self.model_repository = Path(model_repository).resolve()
        self.runtime = runtime
        self.host = host
        self._requested_ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.ports: dict[str, int] = {}
        self.model_control_mode = model_control_mode
        self.load_models = tuple(load_models)
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        # Admin APIs (model control, shared memory, logging, trace) answer only requests that carry this
        # key in the ADMIN_HEADER header; without one given, a random key nobody knows: closed.
        self.admin_key = admin_key or secrets.token_urlsafe(24)
        self._stub_pids: dict[int, list[str]] = {}  # pid -> its shared-memory regions
        self._restarted = False
        self._process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------------------

    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def url_http(self) -> str:
        """``host:port`` of the HTTP endpoint, the form ``tritonclient.http`` takes (no scheme)."""
        return f"{self._connect_host}:{self.ports['http']}"

    @property
    def url_grpc(self) -> str:
        """``host:port`` of the gRPC endpoint, the form ``tritonclient.grpc`` takes."""
        return f"{self._connect_host}:{self.ports['grpc']}"

    @property
    def url_metrics(self) -> str:
        """The full Prometheus metrics URL, ``http://host:port/metrics``."""
        return f"http://{self._connect_host}:{self.ports['metrics']}/metrics"

    @property
    def pid(self) -> int | None:
        """The server's process id, which is also its process group id (None before start)."""
        return self._process.pid if self._process is not None else None

    # -- life cycle ------------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The tritonserver command line (ports must be chosen, i.e. after :meth:`start` began)."""
        assert self.runtime is not None and self.ports, "command() is known once start() has begun"
        command = [str(self.runtime.server_binary), "--model-repository", str(self.model_repository)]
        command += ["--backend-directory", str(self.runtime.backend_directory)]
        for endpoint in ("http", "grpc", "metrics"):
            command += [f"--{endpoint}-address", self.host, f"--{endpoint}-port", str(self.ports[endpoint])]
        command += ["--log-verbose", "0", "--model-control-mode", self.model_control_mode]
        admin = f"{','.join(ADMIN_APIS)}:{ADMIN_HEADER}={self.admin_key}"
        command += [f"--http-restricted-api={admin}", f"--grpc-restricted-protocol={admin}"]
        command += [f"--load-model={name}" for name in self.load_models]
        return command + list(self.extra_args)

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready; raises :class:`TritonServerError` otherwise."""
        if self._process is not None:
            raise RuntimeError("this TritonServer was already started")
        if not self.model_repository.is_dir():
            raise TritonServerError(f"model repository {self.model_repository} is not a directory")
        if self.runtime is None:
            self.runtime = prepare_triton_runtime()
        remove_orphans(self.runtime.backend_directory / "python" / STUB_BINARY)
        self._choose_ports()
        if self.log_path is None:
            logs = self.runtime.backend_directory.parent / "logs"  # <cache>/triton/logs
            self.log_path = logs / f"tritonserver-{self.ports['http']}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab" if self._restarted else "wb")  # a restart continues the log
        command = self.command()
        # If this Python process dies without stopping the server (SIGKILL, a crashed test run), setpriv
        # makes the kernel send the server SIGTERM, so no tritonserver outlives its owner. (The kernel ties
        # this to the thread that starts the server: start it from the main thread or a long-lived one.)
        if shutil.which("setpriv"):
            command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,  # the stubs' prints and tracebacks land in the same log
            env=self.runtime.process_environment(),
            start_new_session=True,  # its own process group: stop() signals the server and its stubs
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _choose_ports(self) -> None:
        taken: set[int] = set()
        for endpoint, port in self._requested_ports.items():
            if port is None:
                port = free_port(self._connect_host)
                while port in taken:
                    port = free_port(self._connect_host)
            elif not port_is_free(port, self._connect_host):
                # Checked here because the readiness probe would otherwise talk to whoever holds the port.
                raise TritonServerError(f"{endpoint} port {port} is already in use")
            taken.add(port)
            self.ports[endpoint] = port

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._process.poll() is not None:
                raise TritonServerError(
                    f"tritonserver exited with code {self._process.returncode} before it was ready\n"
                    + self._diagnostics()
                )
            if self._http_ok("GET", "/v2/health/ready"):
                self._stub_pids = {pid: regions for pid, regions in stub_processes(self._process.pid).items()}
                return
            if time.monotonic() > deadline:
                raise TritonServerError(
                    f"tritonserver was not ready after {self.startup_timeout_s:.0f} s\n" + self._diagnostics()
                )
            time.sleep(POLL_INTERVAL_S)

    def _http(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        url = f"http://{self._connect_host}:{self.ports['http']}{path}"
        request = urllib.request.Request(
            url, data=body, method=method, headers={ADMIN_HEADER: self.admin_key}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:  # 400 "not ready" and the like: an answer all the same
            return error.code, error.read()

    def _http_ok(self, method: str, path: str) -> bool:
        try:
            return self._http(method, path)[0] == 200
        except (OSError, urllib.error.URLError):  # not listening yet
            return False

    def model_states(self) -> list[dict]:
        """The repository index: each model's name, version, state and (when not READY) reason."""
        status, body = self._http("POST", "/v2/repository/index", b"{}")
        if status != 200:
            raise TritonServerError(f"repository index: HTTP {status}: {body.decode(errors='replace')}")
        return json.loads(body)

    def _diagnostics(self) -> str:
        """Model load errors (from the server when it still answers, else from its log) and the log tail."""
        log = self.log_text()
        errors = []
        if self.is_alive():
            try:
                errors = [
                    f"{model['name']} (version {model.get('version', '?')}): {model.get('state')}: "
                    f"{model.get('reason', '')}"
                    for model in self.model_states()
                    if model.get("state") != "READY"
                ]
            except (OSError, TritonServerError, ValueError):
                pass
        if not errors:  # the server prints load failures and a model status table when it gives up
            errors = [line.strip() for line in log.splitlines() if "failed to load" in line]
        tail = "\n".join(log.splitlines()[-40:])
        loads = "\n".join(f"  {error}" for error in errors) or "  (none reported)"
        return f"model load errors:\n{loads}\nlast lines of {self.log_path}:\n{tail}"

    def log_text(self) -> str:
        """Everything the server (and its stubs) wrote so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the whole process group, then SIGKILL after ``timeout_s``; idempotent.

        Returns once the server is reaped and no process of its group is left, so its ports are free.
        """
        if self._process is None:
            return
        pgid = self._process.pid  # start_new_session made the server the leader of its own group
        if self._process.poll() is None or process_group_exists(pgid):
            self._signal_group(pgid, signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(pgid, signal.SIGKILL)
                self._process.wait()
            # The stubs may outlive the server by a moment; give them until the deadline, then kill them.
            deadline = time.monotonic() + timeout_s
            while process_group_exists(pgid) and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL_S)
            if process_group_exists(pgid):
                self._signal_group(pgid, signal.SIGKILL)
        # A server killed outright (kill -9, out of memory) leaves its stubs' shared memory behind.
        for regions in self._stub_pids.values():
            remove_shared_memory(regions)
        if self._log is not None:
            self._log.close()
            self._log = None

    def dead_stubs(self) -> list[int]:
        """The model stub processes that were running when the server became ready and are gone now."""
        return [pid for pid in self._stub_pids if not process_alive(pid)]

    def restart(self) -> None:
        """Stop the server and everything of it, and start it again on the same ports."""
        self._requested_ports = dict(self.ports)
        # A short grace: the requests in flight to a dead model would only be waited for in vain.
        self.stop(timeout_s=RESTART_GRACE_S)
        self._process, self._restarted = None, True
        self.start()

    @staticmethod
    def _signal_group(pgid: int, signum: int) -> None:
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
