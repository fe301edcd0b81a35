"""Errors in the Triton models' own code: a client's mistake is INVALID_ARG with its message, anything
else INTERNAL with no internals (the traceback goes to the server log only).

The models' real ``model.py`` files run here in-process against a small stand-in for
``triton_python_backend_utils`` (Triton's Python backend exists only inside the server), so that an
internal fault can be injected where it would happen: a ``ValueError`` from our own decoding code is
exactly what must not be reported as the client's mistake.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from whisper_triton import contract
from whisper_triton.options import OptionsError

MODELS = Path(__file__).resolve().parent.parent / "model_repository"
SECRET = "shape mismatch in _internal_helper at 0x7f"  # what an internal fault's message might say


class FakeTritonError:
    INVALID_ARG, INTERNAL, UNAVAILABLE = "INVALID_ARG", "INTERNAL", "UNAVAILABLE"

    def __init__(self, message, code=INTERNAL):
        self._message, self._code = message, code

    def message(self):
        return self._message

    def code(self):
        return self._code


class FakeTensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class FakeResponse:
    def __init__(self, output_tensors=None, error=None):
        self.outputs, self.error = output_tensors or [], error


def fake_pb_utils(log: list[str]) -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.TritonError = FakeTritonError
    module.Tensor = FakeTensor
    module.InferenceResponse = FakeResponse
    module.Logger = types.SimpleNamespace(log_error=log.append, log_info=log.append, log_warn=log.append)
    module.get_input_tensor_by_name = lambda request, name: request.get(name)
    return module


@pytest.fixture
def load_model(monkeypatch):
    """load_model(name) -> (the model's module, the server log it writes)."""
    log: list[str] = []
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(log))
    monkeypatch.setitem(sys.modules, "_whisper_triton_paths", types.ModuleType("_whisper_triton_paths"))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_model", MODELS / name / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module, log

    return load


@pytest.fixture(scope="module")
def manifest(tiny_en):
    from whisper_triton.manifest import manifest_from_model

    return manifest_from_model(*tiny_en)


def _decoder_request(manifest) -> dict:
    windows = 1
    arrays = {
        contract.ENCODER_OUTPUT: np.zeros((1, windows, manifest.n_audio_ctx, manifest.d_model), np.float32),
        contract.INPUT_FEATURES: np.zeros(
            (1, windows, manifest.n_mels, 2 * manifest.n_audio_ctx), np.float32
        ),
        contract.WINDOWS: np.array([[[0.0, 3.0, 3.0]]], np.float32),
        contract.DECODE_OPTIONS: np.array([[b"{}"]], dtype=object),
    }
    return {name: FakeTensor(name, array) for name, array in arrays.items()}


class _Failing:
    def __init__(self, error: Exception):
        self.error = error

    def decode_windows(self, *args):
        raise self.error


@pytest.mark.parametrize(
    "error, code",
    [
        (ValueError(SECRET), "INTERNAL"),
        (IndexError(SECRET), "INTERNAL"),
        (OptionsError("beam_size: bad"), "INVALID_ARG"),
    ],
    ids=["internal-ValueError", "internal-IndexError", "client-OptionsError"],
)
def test_decoding_model_tells_client_mistakes_from_its_own_faults(load_model, manifest, error, code):
    module, log = load_model(contract.DECODER_MODEL)
    model = module.TritonPythonModel.__new__(module.TritonPythonModel)  # initialize would load ONNX graphs
    model.manifest, model.max_windows, model.transcriber = manifest, 20, _Failing(error)
    (response,) = model.execute([_decoder_request(manifest)])
    assert response.error is not None and response.error.code() == code
    if code == "INTERNAL":
        assert SECRET not in response.error.message()
        assert response.error.message() == f"internal error in {contract.DECODER_MODEL} (see the server log)"
        assert any(SECRET in line and "Traceback" in line for line in log)  # the operator sees it all
    else:
        assert response.error.message() == "beam_size: bad"


def test_decoding_model_refuses_a_bad_direct_call_as_the_clients(load_model, manifest):
    module, _ = load_model(contract.DECODER_MODEL)
    model = module.TritonPythonModel.__new__(module.TritonPythonModel)
    model.manifest, model.max_windows, model.transcriber = manifest, 20, _Failing(ValueError(SECRET))
    request = _decoder_request(manifest)
    request[contract.WINDOWS] = FakeTensor(contract.WINDOWS, np.array([[[0.0, 40.0, 3.0]]], np.float32))
    (response,) = model.execute([request])
    assert response.error.code() == "INVALID_ARG" and "WINDOWS must hold" in response.error.message()


def test_feature_model_internal_fault_is_internal(load_model):
    module, log = load_model(contract.FEATURES_MODEL)

    class Broken:
        def prepare(self, *args):
            raise ValueError(SECRET)

    model = module.TritonPythonModel.__new__(module.TritonPythonModel)
    model.stage = Broken()
    audio = FakeTensor(contract.AUDIO, np.zeros(16000, np.float32))
    (response,) = model.execute([{contract.AUDIO: audio}])
    assert response.error.code() == "INTERNAL" and SECRET not in response.error.message()
    assert any(SECRET in line for line in log)


def test_encoder_model_internal_fault_is_internal(load_model, manifest):
    module, log = load_model(contract.ENCODER_MODEL)
    model = module.TritonPythonModel.__new__(module.TritonPythonModel)

    def broken(features):
        raise ValueError(SECRET)

    model.encoder, model.shape, model.max_windows = broken, (manifest.n_mels, 2 * manifest.n_audio_ctx), 20
    features = np.zeros((1, 1, *model.shape), np.float32)
    (response,) = model.execute([{contract.INPUT_FEATURES: FakeTensor(contract.INPUT_FEATURES, features)}])
    assert response.error.code() == "INTERNAL" and SECRET not in response.error.message()
    assert any(SECRET in line for line in log)


def test_client_errors_are_not_value_errors():
    """The servers catch ClientError; a ValueError of ours must never be one."""
    from whisper_triton.errors import ClientError
    from whisper_triton.serving import RequestError

    assert not issubclass(ClientError, ValueError) and not issubclass(ValueError, ClientError)
    assert issubclass(RequestError, ClientError) and issubclass(OptionsError, ClientError)
