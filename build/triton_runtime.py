"""The CPU Triton Inference Server from the ``nvidia-pytriton`` wheel, made ready to serve our models.

``nvidia-pytriton`` (installed by ``make setup`` with ``--no-deps``) ships a complete ``tritonserver``
(Triton 2.51, CPU; the Python backend is its only backend, ensembles are built in) and one Python-backend
stub per Python version. Three things stand between that and a working server, and this module does them
once, under ``.cache/triton/``:

1. **A backend directory.** Triton looks for the stub next to ``libtriton_python.so`` and
   ``triton_python_backend_utils.py``; the wheel keeps the stubs elsewhere, so we copy the three files
   into ``backends/python/`` and start the server with ``--backend-directory``. The copied stub no longer
   finds ``libcudart`` through its RUNPATH, so the server runs with the wheel's ``nvidia_pytriton.libs``
   in ``LD_LIBRARY_PATH`` (:meth:`TritonRuntime.process_environment`).
2. **A site directory with numpy < 2.** The stub embeds the system's libpython and reads BYTES tensors
   with code that breaks under numpy 2 (garbage strings, then a crash), while our main environment needs
   numpy 2. So the server-side models get their own ``site/`` (``pip install --target``) holding
   :data:`SERVER_REQUIREMENTS` and nothing else.
3. **A way for model.py to find it.** The stub ignores ``PYTHONPATH``. :func:`write_environment_file`
   writes ``environment.json`` into a model repository, and every ``model.py`` starts with
   :data:`ENVIRONMENT_SNIPPET`, which puts those paths first on ``sys.path``.

A stamp file (a hash of the requirements, the Python version and the wheel's version) makes
:func:`prepare_triton_runtime` a no-op when nothing changed; ``python -m build.triton_runtime`` prepares
the runtime and prints it (``make setup`` runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO_ROOT / ".cache" / "triton"

# What the server-side models import, installed into the runtime's own site directory. The one source of
# truth: the stamp hashes this tuple, so editing it rebuilds the site directory on the next prepare.
# numpy < 2 because the stub's BYTES deserialisation breaks under numpy 2 (see the module docstring); the
# other lower bounds follow pyproject.toml. Our own packages (whisper_triton, ...) are pure Python and
# come from the repository root, which environment.json also puts on sys.path.
SERVER_REQUIREMENTS: tuple[str, ...] = (
    "numpy>=1.24,<2",
    "onnxruntime>=1.22",
    "tokenizers>=0.20",
    "soundfile>=0.12",
    "soxr>=0.3",
    "av>=11",
    "whisper-normalizer>=0.1.12",
    "jiwer>=3.0,<5",
)

ENVIRONMENT_FILE = "environment.json"

# The first lines of every model.py, verbatim. The stub ignores PYTHONPATH and imports model.py before we
# can run any of our code, so the snippet itself reads environment.json from the model repository
# (model.py lives at <model repository>/<model>/<version>/model.py: parents[2]) and puts the runtime's
# site directory and the repository root first on sys.path, ahead of whatever numpy the system has.
# It passes `ruff check` and `ruff format --check` as it is (tests/test_triton_runtime.py checks).
ENVIRONMENT_SNIPPET = """\
# ruff: noqa: E402 -- the imports after the environment snippet need sys.path set first
import json
import pathlib
import sys

# The Triton Python stub ignores PYTHONPATH: put the server environment (environment.json, written by
# `python -m build`) first on sys.path, before anything imports numpy.
_ENVIRONMENT = pathlib.Path(__file__).resolve().parents[2] / "environment.json"
sys.path[:0] = json.loads(_ENVIRONMENT.read_text())["sys_path"]
"""

STAMP_FILE = "stamp.json"
LOCK_FILE = ".lock"
STUB_NAME = "triton_python_backend_stub"
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STAMP_FORMAT = 1  # bump when the layout under root changes, so that old caches are rebuilt


class TritonRuntimeError(RuntimeError):
    """The Triton runtime cannot be prepared; the message says what is missing and how to fix it."""


@dataclasses.dataclass(frozen=True)
class TritonRuntime:
    """Everything needed to start ``tritonserver`` for a model repository of Python-backend models."""

    server_binary: Path  # the tritonserver executable inside the nvidia-pytriton wheel
    backend_directory: Path  # for --backend-directory: holds python/ with the stub for our Python
    site_directory: Path  # SERVER_REQUIREMENTS (numpy < 2, ...), first on the models' sys.path
    library_path: Path  # the wheel's nvidia_pytriton.libs: LD_LIBRARY_PATH, or the stub cannot load
    repo_root: Path  # this repository, second on the models' sys.path (whisper_triton, ...)

    def process_environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: ``os.environ``) with the wheel's libraries first in ``LD_LIBRARY_PATH``."""
        environment = dict(os.environ if base is None else base)
        paths = [str(self.library_path), *filter(None, environment.get("LD_LIBRARY_PATH", "").split(":"))]
        environment["LD_LIBRARY_PATH"] = ":".join(paths)
        return environment


@dataclasses.dataclass(frozen=True)
class _Distribution:
    """The parts of the installed nvidia-pytriton wheel that we use."""

    version: str
    server_binary: Path
    backend_source: Path  # pytriton/tritonserver/backends/python
    stubs: Path  # pytriton/tritonserver/python_backend_stubs/<major.minor>/
    library_path: Path


def _find_distribution() -> _Distribution:
    # find_spec locates the package without importing it (pytriton's __init__ pulls in its client stack).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonRuntimeError(
            "nvidia-pytriton is not installed: it provides the tritonserver binary. "
            "Run `make setup` (it installs the wheel with --no-deps)."
        )
    package = Path(spec.origin).parent
    distribution = _Distribution(
        version=importlib.metadata.version("nvidia-pytriton"),
        server_binary=package / "tritonserver" / "bin" / "tritonserver",
        backend_source=package / "tritonserver" / "backends" / "python",
        stubs=package / "tritonserver" / "python_backend_stubs",
        # auditwheel's directory of vendored shared libraries, next to the package
        library_path=package.parent / "nvidia_pytriton.libs",
    )
    expected = [distribution.server_binary, distribution.library_path]
    expected += [distribution.backend_source / name for name in BACKEND_FILES]
    missing = [str(path) for path in expected if not path.exists()]
    if missing:
        raise TritonRuntimeError(
            f"nvidia-pytriton {distribution.version} is incomplete, missing: {', '.join(missing)}. "
            "Reinstall it with `make setup`."
        )
    return distribution


def _stub_path(distribution: _Distribution, python: str) -> Path:
    stub = distribution.stubs / python / STUB_NAME
    if not stub.is_file():
        available = sorted(
            (path.parent.name for path in distribution.stubs.glob(f"*/{STUB_NAME}")),
            key=lambda version: tuple(int(part) for part in version.split(".")),
        )
        raise TritonRuntimeError(
            f"nvidia-pytriton {distribution.version} has no Python-backend stub for Python {python}; "
            f"it has stubs for: {', '.join(available) or 'none'}. Use one of those Python versions."
        )
    return stub


def _stamp(requirements: Sequence[str], python: str, pytriton_version: str) -> str:
    key = {
        "format": STAMP_FORMAT,
        "requirements": list(requirements),
        "python": python,
        "nvidia-pytriton": pytriton_version,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_stamp(root: Path = DEFAULT_ROOT) -> dict | None:
    """The stamp of a prepared runtime (hash, requirements, resolved versions), or None."""
    try:
        return json.loads((root / STAMP_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _is_prepared(runtime: TritonRuntime, root: Path, stamp: str) -> bool:
    current = read_stamp(root)
    if current is None or current.get("hash") != stamp:
        return False
    expected = [runtime.backend_directory / "python" / name for name in (*BACKEND_FILES, STUB_NAME)]
    return runtime.site_directory.is_dir() and all(path.is_file() for path in expected)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold a lock on ``root``: parallel preparations (make setup, test workers) wait for each other."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as lock:  # "a": taking the lock leaves the file as it is
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _copy_backend(distribution: _Distribution, stub: Path, backend_directory: Path) -> None:
    python_backend = backend_directory / "python"
    shutil.rmtree(backend_directory, ignore_errors=True)
    python_backend.mkdir(parents=True)
    for name in BACKEND_FILES:
        shutil.copy2(distribution.backend_source / name, python_backend / name)
    shutil.copy2(stub, python_backend / STUB_NAME)  # copy2 keeps the executable bit


def _install_site(site_directory: Path, requirements: Sequence[str], python: str) -> None:
    """``pip install --target`` into a fresh directory, renamed into place only when pip succeeded."""
    partial = site_directory.with_name(site_directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--no-input", "--target", str(partial)]
    if python != f"{sys.version_info.major}.{sys.version_info.minor}":
        # Installing for another interpreter: pip can only pick wheels built for it, never build any.
        command += ["--python-version", python, "--only-binary=:all:"]
    command += list(requirements)
    logger.info("installing the server site packages into %s (once; about a minute)", site_directory)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise TritonRuntimeError(
            f"pip could not install the server requirements into {site_directory}:\n"
            f"$ {' '.join(command)}\n{_tail(result.stderr + result.stdout)}"
        )
    shutil.rmtree(site_directory, ignore_errors=True)
    partial.rename(site_directory)


def _resolved_versions(site_directory: Path) -> dict[str, str]:
    """{distribution name: version} of what pip installed into the site directory."""
    distributions = importlib.metadata.distributions(path=[str(site_directory)])
    return dict(sorted((dist.metadata["Name"], dist.version) for dist in distributions))


def missing_libraries(binaries: Sequence[Path], env: Mapping[str, str]) -> list[str]:
    """The ``ldd`` lines that say 'not found', for ``binaries`` run with the environment ``env``."""
    if shutil.which("ldd") is None:
        logger.warning("ldd not found: cannot check the shared libraries of %s", [b.name for b in binaries])
        return []
    missing = []
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=dict(env))
        missing += [
            f"{binary.name}: {line.strip()}" for line in result.stdout.splitlines() if "not found" in line
        ]
    return missing


def _check_libraries(runtime: TritonRuntime, stub: Path) -> None:
    missing = missing_libraries([runtime.server_binary, stub], runtime.process_environment())
    if missing:
        raise TritonRuntimeError(
            "tritonserver or its Python stub cannot load shared libraries:\n  "
            + "\n  ".join(missing)
            + "\nThe stub embeds the system's libpython (Debian: apt-get install libpython3.X for the "
            "Python version in use); the rest comes from nvidia-pytriton (reinstall it with `make setup`)."
        )


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def prepare_triton_runtime(
    root: Path = DEFAULT_ROOT,
    python_version: Sequence[int] = sys.version_info,
    requirements: Sequence[str] = SERVER_REQUIREMENTS,
) -> TritonRuntime:
    """Prepare (once) and return the Triton runtime under ``root``.

    Fast and idempotent when ``root`` already holds a runtime for the same requirements, Python version
    and nvidia-pytriton version; otherwise rebuilds the backend and site directories. ``python_version``
    picks the stub (the stub embeds that version's system libpython). ``requirements`` exists for tests;
    the server's models need :data:`SERVER_REQUIREMENTS`. Raises :class:`TritonRuntimeError` when the
    wheel, the stub or a shared library is missing, or pip fails.
    """
    root = Path(root).resolve()
    python = f"{python_version[0]}.{python_version[1]}"
    distribution = _find_distribution()
    stub = _stub_path(distribution, python)
    runtime = TritonRuntime(
        server_binary=distribution.server_binary,
        backend_directory=root / "backends",
        site_directory=root / "site",
        library_path=distribution.library_path,
        repo_root=REPO_ROOT,
    )
    stamp = _stamp(requirements, python, distribution.version)
    if not _is_prepared(runtime, root, stamp):
        with _locked(root):
            if not _is_prepared(runtime, root, stamp):  # another process may have finished meanwhile
                (root / STAMP_FILE).unlink(missing_ok=True)  # half-built until the new stamp is written
                _copy_backend(distribution, stub, runtime.backend_directory)
                _install_site(runtime.site_directory, requirements, python)
                record = {
                    "hash": stamp,
                    "python": python,
                    "nvidia-pytriton": distribution.version,
                    "requirements": list(requirements),
                    "resolved": _resolved_versions(runtime.site_directory),
                }
                (root / STAMP_FILE).write_text(json.dumps(record, indent=2) + "\n")
    # Cheap (a few ms), so checked every time: a system library can disappear after preparation.
    _check_libraries(runtime, runtime.backend_directory / "python" / STUB_NAME)
    return runtime


def write_environment_file(model_repository: Path, runtime: TritonRuntime) -> Path:
    """Write ``model_repository/environment.json``, read by :data:`ENVIRONMENT_SNIPPET` in each model.py."""
    model_repository = Path(model_repository)
    model_repository.mkdir(parents=True, exist_ok=True)
    sys_path = [str(runtime.site_directory.resolve()), str(runtime.repo_root.resolve())]
    path = model_repository / ENVIRONMENT_FILE
    text = json.dumps({"sys_path": sys_path}, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:  # else leave it: the repository may be read-only
        path.write_text(text)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m build.triton_runtime", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where to prepare it (%(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        runtime = prepare_triton_runtime(args.root)
    except TritonRuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for field in dataclasses.fields(runtime):
        print(f"{field.name:18} {getattr(runtime, field.name)}")
    stamp = read_stamp(args.root) or {}
    resolved = ", ".join(f"{name}=={version}" for name, version in stamp.get("resolved", {}).items())
    print(f"{'server packages':18} {resolved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
