"""The CPU Triton runtime and TritonServer, against a real tritonserver and a tiny Python-backend model.

The probe model takes what the Whisper models will take (FP32 audio of any length, an optional BYTES
JSON options tensor), starts with ENVIRONMENT_SNIPPET, imports our shared code and reports what it saw,
so these tests prove the numpy < 2 BYTES path, per-request errors inside one batch, both protocols and a
clean shutdown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from build.server import TritonServer, TritonServerError, port_is_free
from build.triton_runtime import (
    DEFAULT_ROOT,
    ENVIRONMENT_SNIPPET,
    SERVER_REQUIREMENTS,
    TritonRuntimeError,
    prepare_triton_runtime,
    read_stamp,
    write_environment_file,
)

pytestmark = pytest.mark.slow

PROBE_BODY = '''
import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_triton.audio import resample


class TritonPythonModel:
    """Echoes what it received, and from where numpy came; a bad OPTIONS fails only its own request."""

    def execute(self, requests):
        responses = []
        for request in requests:
            audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
            options = pb_utils.get_input_tensor_by_name(request, "OPTIONS")  # optional: may be None
            try:
                options = {} if options is None else json.loads(options.as_numpy().reshape(-1)[0])
                if not isinstance(options, dict):
                    raise ValueError("not a JSON object")
            except ValueError as error:
                error = pb_utils.TritonError(f"bad OPTIONS: {error}")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            result = {
                "samples": int(audio.size),
                "sum": float(audio.sum()),
                "samples_at_8khz": int(resample(audio.reshape(-1), 16000, 8000).size),
                "options": options,
                "requests_in_execute": len(requests),
                "numpy": np.__version__,
                "numpy_file": np.__file__,
            }
            output = np.array([[json.dumps(result).encode()]], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", output)]))
        return responses
'''

BROKEN_BODY = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("probe-broken refuses to load")
"""


def probe_config(name: str) -> mc.ModelConfig:
    return mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=8,
        input=[
            mc.ModelInput(name="AUDIO", data_type=mc.TYPE_FP32, dims=[-1]),
            mc.ModelInput(name="OPTIONS", data_type=mc.TYPE_STRING, dims=[1], optional=True),
        ],
        output=[mc.ModelOutput(name="RESULT", data_type=mc.TYPE_STRING, dims=[1])],
        # Two requests sent together are executed together, so that a bad one shares an execute() with a
        # good one; the delay only matters for single requests.
        dynamic_batching=mc.ModelDynamicBatching(
            preferred_batch_size=[2], max_queue_delay_microseconds=300_000
        ),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )


def write_model(repository: Path, config: mc.ModelConfig, body: str) -> None:
    model_dir = repository / config.name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    (model_dir / "1" / "model.py").write_text(ENVIRONMENT_SNIPPET + body)


@pytest.fixture(scope="module")
def runtime():
    return prepare_triton_runtime()  # the shared .cache/triton: building it takes a while the first time


@pytest.fixture(scope="module")
def server(runtime, tmp_path_factory):
    repository = tmp_path_factory.mktemp("model_repository")
    write_model(repository, probe_config("probe"), PROBE_BODY)
    write_model(repository, probe_config("probe-broken"), BROKEN_BODY)  # never loaded: explicit mode
    with TritonServer(
        repository,
        runtime=runtime,
        model_control_mode="explicit",
        load_models=["probe"],
        log_path=repository.parent / "tritonserver.log",
    ) as server:
        yield server


# -- the runtime -------------------------------------------------------------------------------------------


def test_prepare_is_idempotent(runtime):
    stamp_path = DEFAULT_ROOT / "stamp.json"
    before = stamp_path.stat().st_mtime_ns
    again = prepare_triton_runtime()
    assert again == runtime
    # The stamp is rewritten only by a rebuild; no wall-clock bound, which a busy CI machine could break.
    assert stamp_path.stat().st_mtime_ns == before, "an unchanged runtime must not be rebuilt"
    stamp = read_stamp()
    assert stamp["requirements"] == list(SERVER_REQUIREMENTS)
    assert stamp["resolved"]["numpy"].startswith("1.")
    assert (runtime.backend_directory / "python" / "triton_python_backend_stub").stat().st_mode & 0o111


def test_changed_requirements_rebuild_the_site(tmp_path):
    root = tmp_path / "triton"
    prepare_triton_runtime(root, requirements=["more-itertools"])
    first = read_stamp(root)
    assert set(first["resolved"]) == {"more-itertools"}
    prepare_triton_runtime(root, requirements=["more-itertools"])
    assert read_stamp(root) == first
    prepare_triton_runtime(root, requirements=["click"])
    assert set(read_stamp(root)["resolved"]) == {"click"}  # a fresh site: more-itertools is gone
    assert read_stamp(root)["hash"] != first["hash"]


def test_unknown_python_version_lists_the_available_stubs(tmp_path):
    with pytest.raises(TritonRuntimeError, match=r"no Python-backend stub for Python 3\.99.*3\.11"):
        prepare_triton_runtime(tmp_path, python_version=(3, 99))
    assert not any(tmp_path.iterdir()), "nothing is built before the stub is found"


def test_missing_shared_libraries_are_named(runtime, tmp_path):
    """Without the wheel's libraries in LD_LIBRARY_PATH the stub cannot find libcudart: say so."""
    from build.triton_runtime import _check_libraries

    broken = dataclasses.replace(runtime, library_path=tmp_path)
    with pytest.raises(TritonRuntimeError, match=r"triton_python_backend_stub: libcudart\S* => not found"):
        _check_libraries(broken, runtime.backend_directory / "python" / "triton_python_backend_stub")


def test_missing_wheel_says_make_setup(tmp_path):
    """Python without site-packages (-S) stands for an environment where nvidia-pytriton is not installed."""
    code = "import sys; from build.triton_runtime import prepare_triton_runtime as p; p(root=sys.argv[1])"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "nvidia-pytriton is not installed" in result.stderr and "make setup" in result.stderr


def test_environment_snippet_puts_the_server_site_first(runtime, tmp_path):
    """Run as a script by this venv's Python (numpy 2), the snippet makes numpy < 2 the one imported."""
    environment = write_environment_file(tmp_path, runtime)
    assert json.loads(environment.read_text()) == {
        "sys_path": [str(runtime.site_directory), str(runtime.repo_root)]
    }
    script = tmp_path / "model" / "1" / "model.py"
    script.parent.mkdir(parents=True)
    script.write_text(
        ENVIRONMENT_SNIPPET + "\nimport numpy\nimport whisper_triton\n\n"
        "print(json.dumps([numpy.__version__, numpy.__file__, whisper_triton.__file__]))\n"
    )
    output = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    version, numpy_file, package_file = json.loads(output.stdout)
    assert version.startswith("1.")
    assert Path(numpy_file).is_relative_to(runtime.site_directory)
    assert Path(package_file).is_relative_to(runtime.repo_root)


def test_environment_snippet_is_lint_clean(tmp_path):
    """model.py files start with the snippet verbatim, so it must pass the project's ruff settings."""
    model = tmp_path / "model.py"
    model.write_text(ENVIRONMENT_SNIPPET + "\nimport numpy as np\n\nprint(np.pi)\n")
    settings = ["--config", str(Path(__file__).resolve().parents[1] / "pyproject.toml")]
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *settings, str(model)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


# -- the server ---------------------------------------------------------------------------------------------


def _inputs(protocol, audio: np.ndarray, options: bytes | None):
    """AUDIO (and OPTIONS) for the probe model; ``protocol`` is tritonclient.grpc or tritonclient.http."""
    inputs = [protocol.InferInput("AUDIO", [1, audio.size], "FP32")]
    inputs[0].set_data_from_numpy(audio.reshape(1, -1))
    if options is not None:
        inputs.append(protocol.InferInput("OPTIONS", [1, 1], "BYTES"))
        inputs[1].set_data_from_numpy(np.array([[options]], dtype=np.object_))
    return inputs


def _result(result) -> dict:
    return json.loads(result.as_numpy("RESULT").reshape(-1)[0])


AUDIO = np.linspace(-0.5, 0.5, 1600, dtype=np.float32) + 0.25  # 0.1 s at 16 kHz; sums to 400


def test_grpc_good_and_bad_requests_in_one_batch(server, runtime):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.url_grpc)
    answers: queue.Queue = queue.Queue()
    for tag, options in (("good", b'{"beam_size": 5}'), ("bad", b"not json")):
        client.async_infer(
            "probe",
            _inputs(grpcclient, AUDIO, options),
            lambda result, error, tag=tag: answers.put((tag, result, error)),
        )
    received = {tag: (result, error) for tag, result, error in (answers.get(timeout=30) for _ in range(2))}
    good, good_error = received["good"]
    assert good_error is None
    result = _result(good)
    assert result["samples"] == AUDIO.size and result["samples_at_8khz"] == AUDIO.size // 2
    assert result["sum"] == pytest.approx(400.0, rel=1e-5)
    assert result["options"] == {"beam_size": 5}
    assert result["requests_in_execute"] == 2, "the bad request must have been in the same execute()"
    assert result["numpy"].startswith("1.")
    assert Path(result["numpy_file"]).is_relative_to(runtime.site_directory)
    bad, bad_error = received["bad"]
    assert bad is None and "bad OPTIONS" in bad_error.message()
    client.close()


def test_http_good_and_bad_requests_and_the_optional_input(server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(server.url_http, concurrency=2)
    good = client.async_infer("probe", _inputs(httpclient, AUDIO, b'{"language": "en"}'))
    bad = client.async_infer("probe", _inputs(httpclient, AUDIO, b"[1, 2]"))
    assert _result(good.get_result())["options"] == {"language": "en"}
    with pytest.raises(InferenceServerException, match="bad OPTIONS: not a JSON object"):
        bad.get_result()
    # OPTIONS is optional: a request without it gets the defaults.
    without = _result(client.infer("probe", _inputs(httpclient, AUDIO, None)))
    assert without["options"] == {} and without["samples"] == AUDIO.size
    assert client.is_model_ready("probe") and not client.is_model_ready("probe-broken")
    client.close()


def test_metrics_endpoint(server):
    import urllib.request

    with urllib.request.urlopen(server.url_metrics, timeout=5) as response:
        assert b'nv_inference_request_success{model="probe"' in response.read()


def test_load_error_is_reported_with_the_log(runtime, tmp_path):
    repository = tmp_path / "repository"
    write_model(repository, probe_config("probe-broken"), BROKEN_BODY)
    server = TritonServer(repository, runtime=runtime, log_path=tmp_path / "server.log", startup_timeout_s=60)
    with pytest.raises(TritonServerError) as raised:
        server.start()
    message = str(raised.value)
    assert "probe-broken refuses to load" in message
    assert "probe-broken" in message.split("model load errors:")[1]
    assert not server.is_alive()


def test_stop_leaves_no_process_and_frees_the_ports(runtime, tmp_path):
    repository = tmp_path / "repository"
    write_model(repository, probe_config("probe"), PROBE_BODY)
    server = TritonServer(repository, runtime=runtime, log_path=tmp_path / "server.log").start()
    assert server.is_alive()
    pgid = server.pid
    stubs = [pid for pid in _pids() if _pgid(pid) == pgid and pid != pgid]
    assert stubs, "the model's stub process runs in the server's process group"
    ports = dict(server.ports)
    server.stop()
    assert not server.is_alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert all(port_is_free(port) for port in ports.values()), ports
    server.stop()  # idempotent


def test_fixed_port_in_use_is_refused(runtime, tmp_path, server):
    busy = TritonServer(tmp_path, runtime=runtime, http_port=server.ports["http"])
    with pytest.raises(TritonServerError, match=f"http port {server.ports['http']} is already in use"):
        busy.start()


def test_cli_serves_until_interrupted(runtime, tmp_path):
    """`make serve`: python -m build.server runs in the foreground and stops cleanly on Ctrl-C."""
    import signal
    import urllib.request

    from build.server import free_port

    repository = tmp_path / "repository"
    write_model(repository, probe_config("probe"), PROBE_BODY)
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    command = [sys.executable, "-m", "build.server", "--model-repository", str(repository)]
    command += ["--host", "127.0.0.1"]
    command += [f"--{endpoint}-port={port}" for endpoint, port in ports.items()]
    command += ["--log-file", str(tmp_path / "server.log")]
    with open(tmp_path / "cli.out", "w+") as output:
        cli = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], stdout=output, stderr=output)
        try:
            deadline = time.monotonic() + 60
            while "ready (bound to 127.0.0.1)" not in (tmp_path / "cli.out").read_text():
                assert cli.poll() is None and time.monotonic() < deadline, (tmp_path / "cli.out").read_text()
                time.sleep(0.1)
            url = f"http://127.0.0.1:{ports['http']}/v2/models/probe/ready"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
            cli.send_signal(signal.SIGINT)
            assert cli.wait(timeout=60) == 0, (tmp_path / "cli.out").read_text()
        finally:
            if cli.poll() is None:
                cli.kill()
    assert "Started GRPCInferenceService" in (tmp_path / "cli.out").read_text()  # the log, followed
    assert all(port_is_free(port) for port in ports.values())


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
