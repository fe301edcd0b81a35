"""A built repository deploys: moved elsewhere and served from an environment holding only the serve
requirements, it gives the same transcripts, and a client-only install transcribes against it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, REPOSITORY

pytestmark = pytest.mark.slow

LOCK = REPO_ROOT / "requirements" / "dev.lock"


# uv (in the dev extra) creates and fills a virtual environment several times faster than venv + pip.
UV = Path(sys.executable).parent / "uv"


def _pip_settings() -> tuple[list[str], dict[str, str]]:
    """pip's index configuration (its config files and PIP_* variables) as uv options and environment:
    uv reads neither, and the packages must come from where `make setup` got them."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, str] = {}
    for line in sorted(listed.splitlines(), key=lambda line: line.startswith(":env:")):  # PIP_* win
        match = re.fullmatch(r"(?:global|install|:env:)\.([a-z-]+)='(.*)'", line.strip())
        if match:
            settings[match.group(1)] = match.group(2)
    options = []
    for key, flag in (("index-url", "--index-url"), ("constraint", "--constraint")):
        if settings.get(key):
            options += [flag, settings[key]]
    for key, flag in (("extra-index-url", "--extra-index-url"), ("find-links", "--find-links")):
        for value in settings.get(key, "").split():
            options += [flag, value]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        options.append("--no-index")
    # pip picks the best version over all its indexes; uv by default stops at the first index that has a
    # package at all (where the pinned version may be missing).
    options += ["--index-strategy", "unsafe-best-match"]
    environment = {"SSL_CERT_FILE": settings["cert"]} if settings.get("cert") else {}
    return options, environment


def _venv(path: Path, *requirements: str) -> Path:
    """A fresh virtual environment (this interpreter's Python) with ``requirements``, at the versions the
    lock pins."""
    options, environment = _pip_settings()
    env = {**os.environ, **environment}
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(path)], check=True, env=env)
    python = path / "bin" / "python"
    command = [str(UV), "pip", "install", "-q", "--python", str(python), *options, "-c", str(LOCK)]
    result = subprocess.run([*command, *requirements], capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(
        subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    )


@pytest.fixture(scope="module")
def moved_server(server, tmp_path_factory):
    """The test repository copied to a new place and served with a serve-only environment: no
    whisper-triton installed there, and this checkout on none of its paths."""
    from whisper_triton.server.launcher import TritonServer
    from whisper_triton.server.runtime import prepare_triton_runtime

    root = tmp_path_factory.mktemp("deployment")
    requirements = (REPOSITORY / "requirements.txt").read_text().split("\n")
    requirements = [line for line in requirements if line and not line.startswith("#")]
    serve_python = _venv(root / "serve-env", *requirements)
    moved = root / "elsewhere" / "whisper-repository"
    shutil.copytree(REPOSITORY, moved, ignore=shutil.ignore_patterns("server.log", "__pycache__"))
    runtime = prepare_triton_runtime(python_path=[_site_packages(serve_python)])
    assert not any(REPO_ROOT in path.parents or path == REPO_ROOT for path in runtime.python_path)
    with TritonServer(moved, runtime=runtime, log_path=root / "moved-server.log") as running:
        yield running, moved, serve_python


def test_nothing_in_a_built_repository_names_the_build_host(server):
    for path in REPOSITORY.rglob("*"):
        if path.is_file() and path.suffix in (".pbtxt", ".json", ".py", ".txt"):
            text = path.read_text(errors="replace")
            assert str(REPO_ROOT) not in text and str(Path.home()) not in text, path


def test_moved_repository_serves_identical_transcripts(server, grpc_client, moved_server, corpus_audio):
    import tritonclient.grpc as grpcclient

    from tests.test_serving import infer

    moved, repository, serve_python = moved_server
    client = grpcclient.InferenceServerClient(moved.url_grpc)
    for audio in corpus_audio[:6]:
        for options in ({}, {"timestamps": True}):
            assert infer(client, audio, options) == infer(grpc_client, audio, options)
    # Each model ran the code bundled in the moved repository, not this checkout's.
    log = moved.log_text()
    for model in ("whisper_features", "whisper_encoder", "whisper_decoder"):
        match = re.search(rf"{model}: whisper_triton from ([^\s\"]+)", log)
        assert match and Path(match.group(1)) == repository / model / "1" / "whisper_triton", log[-2000:]
    checkout = subprocess.run(
        [str(serve_python), "-c", "import whisper_triton"],
        capture_output=True,
        text=True,
        cwd=repository.parent,
    )
    assert checkout.returncode != 0, "the serve environment must not reach this checkout's code"


def test_client_only_install_transcribes_against_the_moved_server(
    moved_server, grpc_client, project_wheel, corpus_entries, corpus_audio, tmp_path
):
    """`pip install 'whisper-triton[client]'` from the wheel: no torch, no ONNX, and the CLI works."""
    from tests.test_serving import infer

    moved, _repository, _ = moved_server
    _source, wheel = project_wheel
    python = _venv(tmp_path / "client-env", f"whisper-triton[client] @ {wheel.as_uri()}")
    missing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print([m for m in ('torch', 'onnx', 'onnxruntime', "
            "'transformers', 'pytriton') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert missing.stdout.strip() == "[]"
    flac = corpus_entries[1]["audio_filepath"]
    result = subprocess.run(
        [str(python.parent / "whisper-triton"), "transcribe", flac, "--url", moved.url_grpc],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == infer(grpc_client, corpus_audio[1])[0]
