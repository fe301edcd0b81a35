"""Hardened serving: admin APIs closed, internal models checked, dead processes replaced, nothing left
behind, no request can crash the server or read its files, and a bounded load with bad requests mixed in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPOSITORY
from tests.test_serving import BAD_REQUESTS, infer
from whisper_triton import contract

pytestmark = pytest.mark.slow
SOAK_SECONDS = float(os.environ.get("WHISPER_TRITON_SOAK_SECONDS", "15"))  # make soak: 300


def _post(url: str, path: str, body: dict, headers: dict | None = None) -> int:
    request = urllib.request.Request(
        f"http://{url}{path}", data=json.dumps(body).encode(), method="POST", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_admin_apis_answer_only_with_the_key(server):
    from whisper_triton.server.launcher import ADMIN_HEADER

    key = {ADMIN_HEADER: server.admin_key}
    for path, body in (
        ("/v2/logging", {"log_verbose_level": 1}),
        ("/v2/repository/index", {}),
        ("/v2/systemsharedmemory/region/x/register", {"key": "/x", "offset": 0, "byte_size": 8}),
        ("/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}),
    ):
        assert _post(server.url_http, path, body) in (400, 403), path
    assert _post(server.url_http, "/v2/logging", {"log_verbose_level": 0}, key) == 200
    assert _post(server.url_http, "/v2/repository/index", {}, key) == 200
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.url_grpc)
    with pytest.raises(InferenceServerException):
        client.register_system_shared_memory("x", "/x", 8)
    with pytest.raises(InferenceServerException):
        client.unload_model(contract.DECODER_MODEL)
    assert client.is_model_ready(contract.DECODER_MODEL)


def test_internal_models_check_direct_calls(server, grpc_client):
    """A client can call the encoder and decoding models directly: their inputs are checked like a
    request's, and the answer is INVALID_ARGUMENT without a traceback or a server path."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    def call(model, tensors):
        inputs = []
        for name, array in tensors.items():
            tensor = grpcclient.InferInput(
                name, list(array.shape), "BYTES" if array.dtype == object else "FP32"
            )
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException) as raised:
            grpc_client.infer(model, inputs)
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT", raised.value
        assert "Traceback" not in str(raised.value) and "/whisper_triton/" not in str(raised.value)
        return str(raised.value)

    too_many = np.zeros((1, 60, 80, 3000), np.float32)
    assert "windows" in call(contract.ENCODER_MODEL, {contract.INPUT_FEATURES: too_many})
    windows = np.array([[[0.0, 5.0, 5.0]]], np.float32)
    mismatched = {
        contract.ENCODER_OUTPUT: np.zeros((1, 2, 1500, 384), np.float32),
        contract.INPUT_FEATURES: np.zeros((1, 1, 80, 3000), np.float32),
        contract.WINDOWS: windows,
        contract.DECODE_OPTIONS: np.array([[b"{}"]], dtype=object),
    }
    assert "ENCODER_OUTPUT" in call(contract.DECODER_MODEL, mismatched)
    bad_options = {**mismatched, contract.ENCODER_OUTPUT: np.zeros((1, 1, 1500, 384), np.float32)}
    bad_options[contract.DECODE_OPTIONS] = np.array([[b'{"beam_size": "x"']], dtype=object)
    assert "JSON" in call(contract.DECODER_MODEL, bad_options)
    backwards = {**bad_options, contract.DECODE_OPTIONS: np.array([[b"{}"]], dtype=object)}
    backwards[contract.WINDOWS] = np.array([[[5.0, 1.0, 1.0]]], np.float32)
    assert "WINDOWS" in call(contract.DECODER_MODEL, backwards)


# -- processes that die ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher(built_repository, tmp_path_factory):
    """`whisper-triton serve` (the supervising launcher) on the test repository, on fixed free ports: one
    for the module, since every test that kills a process under it waits until it transcribes again."""
    from whisper_triton.server.launcher import free_port

    tmp_path = tmp_path_factory.mktemp("supervised")

    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    command = [
        str(Path(sys.executable).parent / "whisper-triton"),
        "serve",
        "--model-repository",
        str(REPOSITORY),
    ]
    command += [f"--{name}-port={port}" for name, port in ports.items()]
    command += ["--log-file", str(tmp_path / "server.log")]
    output = open(tmp_path / "serve.out", "w+")
    process = subprocess.Popen(command, stdout=output, stderr=output)
    deadline = time.monotonic() + 180
    while "ready (bound to" not in (tmp_path / "serve.out").read_text():
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.out").read_text()[
            -3000:
        ]
        time.sleep(0.2)
    yield process, f"127.0.0.1:{ports['grpc']}", tmp_path / "serve.out"
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        output.close()


class _OutputSince:
    """The launcher's output from one point on: what it printed during this test alone."""

    def __init__(self, path: Path):
        self.path, self.start = path, path.stat().st_size

    def read_text(self) -> str:
        with open(self.path, "rb") as handle:
            handle.seek(self.start)
            return handle.read().decode(errors="replace")


@pytest.fixture
def supervised(launcher):
    """(launcher process, gRPC url, its output during this test) of the module's supervised server, alive
    at the start of the test (each test that kills a process under it waits until it transcribes again)."""
    process, url, output = launcher
    assert process.poll() is None, output.read_text()[-3000:]
    yield process, url, _OutputSince(output)


def _server_pid(launcher: int) -> int:
    import psutil

    return next(
        p.pid for p in psutil.Process(launcher).children(recursive=True) if p.name() == "tritonserver"
    )


def _stub(server_pid: int, model: str) -> int:
    from whisper_triton.server.processes import stub_processes

    for pid in stub_processes(server_pid):
        if f"/{model}/" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    raise AssertionError(f"no stub for {model}")


def _until_transcribed(url: str, audio: np.ndarray, limit_s: float) -> tuple[float, list[str]]:
    """Seconds until a request succeeds again, and the errors clients got meanwhile (each within its timeout)."""
    from whisper_triton.client.api import WhisperClient

    started, errors = time.monotonic(), []
    while time.monotonic() - started < limit_s:
        try:
            WhisperClient(url, timeout_s=30).transcribe(audio)
            return time.monotonic() - started, errors
        except Exception as error:  # noqa: BLE001 - collected: what a client sees during the outage
            errors.append(type(error).__name__ + ": " + str(error)[:120])
            time.sleep(0.5)
    raise AssertionError(f"not transcribing {limit_s} s after the failure; errors: {errors[-5:]}")


@pytest.mark.parametrize("model", [contract.DECODER_MODEL, contract.FEATURES_MODEL])
def test_a_dead_stub_is_replaced(supervised, corpus_audio, model):
    """kill -9 of a model's stub under load: the launcher notices within a second, restarts the server,
    and requests succeed again; clients in flight get an answer or an error within their timeout, never
    a hang."""
    from whisper_triton.client.api import WhisperClient

    launcher, url, log = supervised
    server = _server_pid(launcher.pid)
    audio = corpus_audio[0]
    outcomes = []

    def load():
        for _ in range(3):
            started = time.monotonic()
            try:
                WhisperClient(url, timeout_s=60).transcribe(audio)
                outcomes.append(("ok", time.monotonic() - started))
            except Exception as error:  # noqa: BLE001 - what a client sees during the outage
                outcomes.append((type(error).__name__, time.monotonic() - started))

    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(load) for _ in range(2)]
        time.sleep(1)
        os.kill(_stub(server, model), signal.SIGKILL)
        [future.result() for future in running]
    recovered, errors = _until_transcribed(url, audio, 240)
    print(f"{model} stub killed: in flight {outcomes}; transcribing again {recovered:.1f} s later")
    assert all(seconds < 60 for _, seconds in outcomes), outcomes
    assert "died: restarting tritonserver" in log.read_text()
    assert _server_pid(launcher.pid) != server


def test_a_killed_server_leaves_nothing_behind(supervised, corpus_audio):
    """kill -9 of tritonserver itself: its stubs and their shared memory are cleaned up, and the
    launcher brings a new server up."""
    from whisper_triton.server.processes import SHM_DIRECTORY, stub_processes

    launcher, url, log = supervised
    server = _server_pid(launcher.pid)
    stubs = stub_processes(server)
    regions = [region for names in stubs.values() for region in names]
    assert stubs and regions
    os.kill(server, signal.SIGKILL)
    _until_transcribed(url, corpus_audio[0], 240)
    assert not any(Path(f"/proc/{pid}").exists() for pid in stubs), "the dead server's stubs are gone"
    assert not any((SHM_DIRECTORY / region).exists() for region in regions), "and their shared memory"
    assert "tritonserver exited" in log.read_text()


def test_probe_fails_when_inference_fails(server, tmp_path):
    probe = [str(Path(sys.executable).parent / "whisper-triton"), "probe"]
    assert subprocess.run([*probe, "--url", server.url_grpc], capture_output=True).returncode == 0
    from whisper_triton.server.launcher import free_port

    nobody = subprocess.run(
        [*probe, "--url", f"127.0.0.1:{free_port()}", "--timeout", "5"], capture_output=True, text=True
    )
    assert nobody.returncode == 1 and "whisper-triton probe" in nobody.stderr


# -- load ------------------------------------------------------------------------------------------------


def _rss(pid: int) -> dict[str, int]:
    """Resident memory of the server and each model stub (by model name and pid)."""
    import psutil

    sizes = {}
    for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        command = " ".join(process.cmdline())
        model = next((m for m in contract.ALL_MODELS if f"/{m}/" in command), "tritonserver")
        sizes[f"{model}-{process.pid}"] = process.memory_info().rss
    return sizes


def test_bounded_load_with_bad_requests_mixed_in(server, corpus_audio):
    """Concurrency 8 for SOAK_SECONDS (15 in make test, 300 in make soak), one request in ten a bad one:
    no good request fails, every bad one gets its own clear error, and memory does not creep."""
    import tritonclient.grpc as grpcclient

    bad_cases = sorted(BAD_REQUESTS)
    results, lock = {"good": [], "bad": 0, "failed": []}, threading.Lock()
    stop = 0.0
    rss = {}

    def worker(index: int) -> None:
        client = grpcclient.InferenceServerClient(server.url_grpc)
        count = 0
        while time.monotonic() < stop:
            count += 1
            if count % 10 == index % 10:
                kwargs, _ = BAD_REQUESTS[bad_cases[(count + index) % len(bad_cases)]]
                try:
                    infer(client, **kwargs)
                    failure = "a bad request succeeded"
                except Exception as error:  # noqa: BLE001
                    failure = (
                        None
                        if "INVALID_ARGUMENT" in str(getattr(error, "status", lambda: "")())
                        else str(error)
                    )
                with lock:
                    results["bad"] += 1
                    if failure:
                        results["failed"].append(failure)
                continue
            started = time.perf_counter()
            try:
                text, _ = infer(client, corpus_audio[(count + index) % len(corpus_audio)])
                with lock:
                    results["good"].append(time.perf_counter() - started)
                    if not text:
                        results["failed"].append("empty transcript")
            except Exception as error:  # noqa: BLE001
                with lock:
                    results["failed"].append(f"good request failed: {error}")

    # Warm-up: the same mix for a while, so every process has seen every kind of request (the largest
    # ones grow a stub's shared memory and tritonserver's buffers once); memory is then compared between
    # two idle moments, after the warm-up and after the load.
    def refused(kwargs):
        try:
            infer(grpcclient.InferenceServerClient(server.url_grpc), **kwargs)
        except Exception:  # noqa: BLE001 - refused, as the bad-request tests check
            pass

    with ThreadPoolExecutor(8) as pool:  # each kind of bad request 8 at a time: the largest buffers, once
        list(pool.map(refused, [BAD_REQUESTS[case][0] for case in bad_cases for _ in range(8)]))
    stop = time.monotonic() + min(20.0, max(10.0, SOAK_SECONDS / 3))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    results.update(good=[], bad=0)
    time.sleep(2)
    rss["warm"] = _rss(server.pid)
    stop = time.monotonic() + SOAK_SECONDS
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    time.sleep(2)  # idle again, as at the start: what the processes keep, not what a batch holds
    rss["end"] = _rss(server.pid)
    latencies = np.array(results["good"]) * 1000
    growth = sum(rss["end"].values()) / sum(rss["warm"].values()) - 1
    changes = {
        name: f"{rss['warm'][name] / 2**20:.0f}->{rss['end'].get(name, 0) / 2**20:.0f} MB"
        for name in rss["warm"]
    }
    print(
        f"{SOAK_SECONDS:.0f} s at concurrency 8: {len(latencies)} good (p50 {np.percentile(latencies, 50):.0f} ms, "
        f"p95 {np.percentile(latencies, 95):.0f} ms), {results['bad']} bad; server RSS after warm-up -> end "
        f"{100 * growth:+.1f}%: {changes}"
    )
    assert not results["failed"], results["failed"][:5]
    assert results["bad"] > 0 and len(latencies) > 8
    assert growth < 0.05


def test_worst_legal_request_memory_is_bounded_and_returned(server, corpus_entries):
    """Two minutes of speech at beam 16 (the largest beam; the decoder keeps one cross K/V per window):
    the decoding process's peak stays bounded, and it gives the memory back afterwards."""
    import psutil

    from whisper_triton.corpus import concatenate_utterances
    from whisper_triton.server.processes import stub_processes

    decoder = psutil.Process(_stub(server.pid, contract.DECODER_MODEL))
    audio, _ = concatenate_utterances(corpus_entries, gap_seconds=0.3)
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.url_grpc)
    before = decoder.memory_info().rss
    peak, running = [before], True

    def sample():
        while running:
            peak.append(decoder.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    text, _ = infer(client, audio, {"beam_size": 16})
    running = False
    sampler.join()
    time.sleep(2)
    after = decoder.memory_info().rss
    print(
        f"decoder RSS {before / 2**20:.0f} MB, peak {max(peak) / 2**20:.0f} MB, after {after / 2**20:.0f} MB"
    )
    assert text and stub_processes(server.pid)
    assert max(peak) - before < 1.5 * 2**30  # the 1 GB decoder budget plus Python's own overhead
    assert after - before < 0.3 * 2**30
