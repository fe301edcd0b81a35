"""The CPU Triton runtime and TritonServer, against a real tritonserver and a tiny Python-backend model.

The probe model takes what the Whisper models will take (FP32 audio of any length, an optional BYTES
JSON options tensor), starts like our model.py files (``_whisper_triton_paths``, then the bundled
whisper_triton), and reports what it saw, so these tests prove that the models run on the tools' own
environment (numpy 1.x) and the bundled code, per-request errors inside one batch, both protocols and a
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

from whisper_triton.build.model_code import PATHS_MODULE, SOURCE_REPOSITORY, bundle_core_package
from whisper_triton.server.launcher import TritonServer, TritonServerError, port_is_free
from whisper_triton.server.runtime import (
    TritonRuntimeError,
    check_python_path,
    default_root,
    environment_site_paths,
    prepare_triton_runtime,
    read_stamp,
)

pytestmark = pytest.mark.slow

MODEL_START = "import json\n\nimport _whisper_triton_paths  # noqa: F401\n"

PROBE_BODY = '''
import numpy as np
import whisper_triton
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
                "whisper_triton_file": whisper_triton.__file__,
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
    """A model laid out as the build lays out ours: model.py, the paths module, bundled whisper_triton."""
    model_dir = repository / config.name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    (model_dir / "1" / "model.py").write_text(MODEL_START + body)
    (model_dir / "1" / PATHS_MODULE).write_text((SOURCE_REPOSITORY / PATHS_MODULE).read_text())
    bundle_core_package(model_dir / "1" / "whisper_triton")


@pytest.fixture(scope="module")
def runtime():
    return prepare_triton_runtime()  # the shared <cache>/triton


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
    stamp_path = default_root() / "stamp.json"
    before = stamp_path.stat().st_mtime_ns
    again = prepare_triton_runtime()
    assert again == runtime
    # The stamp is rewritten only by a rebuild; no wall-clock bound, which a busy CI machine could break.
    assert stamp_path.stat().st_mtime_ns == before, "an unchanged runtime must not be rebuilt"
    assert read_stamp()["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert (runtime.backend_directory / "python" / "triton_python_backend_stub").stat().st_mode & 0o111
    # The models use this very environment: one numpy for the tools and the server.
    assert runtime.python_path == environment_site_paths()
    assert runtime.process_environment()["PYTHONPATH"].split(os.pathsep) == [
        str(p) for p in runtime.python_path
    ]


def _fake_numpy(site: Path, version: str) -> Path:
    info = site / f"numpy-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: numpy\nVersion: {version}\n")
    return site


def test_a_numpy_2_environment_is_refused_with_the_reason(tmp_path):
    """The stub reads numpy 1's array descriptors; the check names the version and what breaks."""
    with pytest.raises(TritonRuntimeError, match=r"numpy 2\.1\.0.*built for numpy 1\.x"):
        check_python_path([_fake_numpy(tmp_path / "two", "2.1.0")])
    with pytest.raises(TritonRuntimeError, match="has no numpy"):
        check_python_path([tmp_path / "empty"])
    check_python_path([_fake_numpy(tmp_path / "one", "1.26.4")])


def test_unknown_python_version_lists_the_available_stubs(tmp_path):
    with pytest.raises(TritonRuntimeError, match=r"no Python-backend stub for Python 3\.99.*3\.11"):
        prepare_triton_runtime(tmp_path, python_version=(3, 99))
    assert not any(tmp_path.iterdir()), "nothing is built before the stub is found"


def test_missing_shared_libraries_are_named(runtime, tmp_path):
    """Without the wheel's libraries in LD_LIBRARY_PATH the stub cannot find libcudart: say so."""
    from whisper_triton.server.runtime import _check_libraries

    broken = dataclasses.replace(runtime, library_path=tmp_path)
    with pytest.raises(TritonRuntimeError, match=r"triton_python_backend_stub: libcudart\S* => not found"):
        _check_libraries(broken, runtime.backend_directory / "python" / "triton_python_backend_stub")


def test_missing_wheel_says_make_setup(tmp_path, monkeypatch):
    """An environment where nvidia-pytriton is not installed: the error says what provides the server."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "pytriton" else real(name))
    with pytest.raises(TritonRuntimeError, match="nvidia-pytriton is not installed.*make setup"):
        prepare_triton_runtime(tmp_path)


def test_paths_module_puts_the_bundled_code_then_pythonpath_first(tmp_path):
    """Run as the stub runs Python (isolated: PYTHONPATH ignored), a model version's first import puts
    its bundled whisper_triton first, then PYTHONPATH, ahead of whatever else is installed."""
    version = tmp_path / "model" / "1"
    version.mkdir(parents=True)
    (version / PATHS_MODULE).write_text((SOURCE_REPOSITORY / PATHS_MODULE).read_text())
    bundle_core_package(version / "whisper_triton")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "probe_marker.py").write_text("")
    script = version / "model.py"
    script.write_text(
        MODEL_START + "import sys\nimport probe_marker\nimport whisper_triton.audio\n"
        "print(json.dumps([whisper_triton.audio.__file__, probe_marker.__file__, sys.path[:2]]))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(extra)}
    # As the stub does: an isolated interpreter, with the version folder appended to sys.path.
    start = f"import runpy, sys; sys.path.append({str(version)!r}); runpy.run_path({str(script)!r})"
    output = subprocess.run(
        [sys.executable, "-I", "-c", start], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert output.returncode == 0, output.stderr
    package_file, marker_file, first = json.loads(output.stdout)
    assert Path(package_file).is_relative_to(version / "whisper_triton")
    assert Path(marker_file).parent == extra
    assert first == [str(version), str(extra)]


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
    assert Path(result["numpy_file"]).is_relative_to(runtime.python_path[0])  # the tools' own numpy
    assert "/probe/1/whisper_triton/" in result["whisper_triton_file"]  # the bundled copy
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
    """`make serve`: whisper-triton serve runs in the foreground and stops cleanly on Ctrl-C."""
    import signal
    import urllib.request

    from whisper_triton.server.launcher import free_port

    repository = tmp_path / "repository"
    write_model(repository, probe_config("probe"), PROBE_BODY)
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    command = [str(Path(sys.executable).parent / "whisper-triton"), "serve"]
    command += ["--model-repository", str(repository)]
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
