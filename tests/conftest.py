"""Session fixtures shared by the test modules: the synthetic speech corpus and the tiny.en model."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from whisper_triton.paths import cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
# Kept between runs (in the user cache): synthesis is deterministic and the corpus module reuses a complete
# corpus with the same parameters instead of synthesising it again.
CORPUS_DIR = Path(os.environ.get("WHISPER_TRITON_TEST_CORPUS") or cache_dir("test-corpus"))
CORPUS_SIZE = 40  # enough utterances that 95% agreement means at most 2 differences
CORPUS_SEED = 0


@functools.cache
def _reference_repository() -> Path:
    from tests.artifacts import repository_path

    return repository_path("tiny.en", "fp32")


def __getattr__(name: str):
    """``REPOSITORY``: where the served reference (tiny.en, fp32, python runtime) is cached by content
    (tests/artifacts.py), computed on first use, so that modules that never serve do not hash the
    sources. The ``built_repository`` fixture (which ``server`` uses) builds it."""
    if name == "REPOSITORY":
        return _reference_repository()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pytest_collection_finish(session):
    """The int8 gate's in-process decoding starts now, in the background at idle priority, when that test
    is selected (tests/prefetch.py)."""
    if not session.config.option.collectonly:
        from tests import prefetch

        prefetch.start(session.items)


def pytest_sessionfinish(session):
    from tests import prefetch

    prefetch.stop()


def two_step_training_config(output_dir: Path, model: dict, **training) -> dict:
    """A `python -m training train` config: 2 steps on 4 corpus utterances, evaluation on 2.

    ``training`` overrides or adds training arguments (the learning rate, generation length, ...).
    """
    return {
        "model": model,
        "data": {
            "train_split": str(CORPUS_DIR),
            "eval_split": str(CORPUS_DIR),
            "max_train_samples": 4,
            "max_eval_samples": 2,
        },
        "training": {
            "output_dir": str(output_dir),
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "eval_steps": 2,
            "save_steps": 2,
            "logging_steps": 1,
            "report_to": ["none"],
            **training,
        },
    }


@pytest.fixture(scope="session")
def corpus_entries() -> list[dict]:
    """The test corpus: Piper and espeak-ng sentences in LibriSpeech layout, as manifest entries."""
    from whisper_triton.corpus import read_manifest, synthesize_corpus

    return read_manifest(synthesize_corpus(CORPUS_DIR, num_utterances=CORPUS_SIZE, seed=CORPUS_SEED))


@pytest.fixture(scope="session")
def corpus_audio(corpus_entries) -> list:
    from whisper_triton.audio import load_audio

    return [load_audio(entry["audio_filepath"]) for entry in corpus_entries]


@pytest.fixture(scope="session")
def tiny_en():
    """(model, processor) of the bundled tiny.en, loaded once per session."""
    from training.modeling import create_whisper_model_and_processor

    return create_whisper_model_and_processor("tiny.en")


@pytest.fixture(scope="session")
def built_repository() -> Path:
    """tiny.en built by whisper-triton build (fp32, python runtime) at ``REPOSITORY``: from the content
    cache when these sources and weights were built (and verified) before."""
    from tests.artifacts import built_repository

    repository, report = built_repository("tiny.en", "fp32")
    assert repository == _reference_repository()
    assert report.utterances and report.identical == report.utterances  # the build's own parity check
    return repository


@pytest.fixture(scope="session")
def exported_graphs(tiny_en):
    """tiny.en's three float32 ONNX graphs (``export_onnx_models``), from the content cache. Shared: read
    them, write anything derived from them elsewhere."""
    from tests.artifacts import exported_graphs

    return exported_graphs(tiny_en[0], "tiny.en")


@pytest.fixture(scope="session")
def server(built_repository, tmp_path_factory):
    """tritonserver on free loopback ports, serving ``built_repository``."""
    from whisper_triton.server.launcher import TritonServer

    log = tmp_path_factory.mktemp("server") / "server.log"  # the cached repository may be shared
    with TritonServer(built_repository, log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def grpc_client(server):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.url_grpc)


@pytest.fixture(scope="session")
def reference(tiny_en):
    from training.torch_backend import torch_transcriber

    return torch_transcriber(*tiny_en)


def source_copy(target: Path) -> Path:
    """The files of this checkout that a fresh clone of it would have, copied to ``target``."""
    command = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]  # tracked + new, not ignored
    listed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell the tracked files")
    for name in listed.stdout.splitlines():
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory) -> tuple[Path, Path]:
    """(sources, wheel): ``pip wheel .`` of a fresh copy of the tracked sources, so that a build never
    writes into this checkout."""
    source = source_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel(source, out)
    return source, next(out.glob("*.whl"))


def pip_wheel(source: Path, out: Path) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
