"""The CPU Triton Inference Server from the ``nvidia-pytriton`` wheel, made ready to serve our models.

``nvidia-pytriton`` (installed by ``make setup`` with ``--no-deps``) ships a complete ``tritonserver``
(Triton 2.51, CPU; the Python backend is its only backend, ensembles are built in) and one Python-backend
stub per Python version. Two things stand between that and a working server; this module does them once,
under the user cache (``whisper_triton.paths.cache_dir("triton")``):

1. **A backend directory.** Triton looks for the stub next to ``libtriton_python.so`` and
   ``triton_python_backend_utils.py``; the wheel keeps the stubs elsewhere, so we copy the three files
   into ``backends/python/`` and start the server with ``--backend-directory``. The copied stub no longer
   finds ``libcudart`` through its RUNPATH, so the server runs with the wheel's ``nvidia_pytriton.libs``
   in ``LD_LIBRARY_PATH`` (:meth:`TritonRuntime.process_environment`).
2. **A Python environment for the models.** The stub embeds the system's ``libpython3.X`` and runs it
   isolated (``sys.flags.isolated``): it ignores ``PYTHONPATH`` and sees only the system's site
   directories. Every model's first import (``_whisper_triton_paths``, copied into the repository by the
   build) applies ``PYTHONPATH`` itself, and this launcher sets it to the site directories of the Python
   environment it runs in, so the models import numpy, ONNX Runtime, ... from the very environment the
   tools use: one numpy, one ONNX Runtime, the same log-mel features in the server and in-process.
   That environment must hold numpy 1.x: this release's stub is built with a pybind11 that reads numpy
   1's array descriptors, and under numpy 2 every item size reads as 0 (numeric outputs arrive empty,
   BYTES inputs as garbage). :func:`prepare_triton_runtime` checks it and says so.

A stamp file (the Python version and the wheel's version) makes :func:`prepare_triton_runtime` a no-op
when nothing changed; ``whisper-triton runtime`` prepares it and prints it (``make setup`` runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

from whisper_triton.native import missing_libraries
from whisper_triton.paths import cache_dir, locked

logger = logging.getLogger(__name__)

STAMP_FILE = "stamp.json"
LOCK_FILE = ".lock"
STUB_NAME = "triton_python_backend_stub"
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STAMP_FORMAT = 2  # bump when the layout under root changes, so that old caches are rebuilt
MAX_NUMPY_MAJOR = 1  # see the module docstring: the stub's pybind11 reads numpy 1's descriptors


class TritonRuntimeError(RuntimeError):
    """The Triton runtime cannot be prepared; the message says what is missing and how to fix it."""


def default_root() -> Path:
    return cache_dir("triton")


def environment_site_paths() -> tuple[Path, ...]:
    """The site directories of the running interpreter's environment (a venv's site-packages)."""
    paths = sysconfig.get_paths()
    return tuple(dict.fromkeys(Path(paths[key]) for key in ("purelib", "platlib")))


@dataclasses.dataclass(frozen=True)
class TritonRuntime:
    """Everything needed to start ``tritonserver`` for a model repository of Python-backend models."""

    server_binary: Path  # the tritonserver executable inside the nvidia-pytriton wheel
    backend_directory: Path  # for --backend-directory: holds python/ with the stub for our Python
    library_path: Path  # the wheel's nvidia_pytriton.libs: LD_LIBRARY_PATH, or the stub cannot load
    python_path: tuple[Path, ...]  # the models' third-party packages: PYTHONPATH of the server process

    def process_environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: ``os.environ``) with the wheel's libraries first in ``LD_LIBRARY_PATH`` and
        ``PYTHONPATH`` set to :attr:`python_path` (applied by the models' ``_whisper_triton_paths``)."""
        environment = dict(os.environ if base is None else base)
        paths = [str(self.library_path), *filter(None, environment.get("LD_LIBRARY_PATH", "").split(":"))]
        environment["LD_LIBRARY_PATH"] = ":".join(paths)
        environment["PYTHONPATH"] = os.pathsep.join(str(path) for path in self.python_path)
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


def _stamp(python: str, pytriton_version: str) -> dict:
    return {"format": STAMP_FORMAT, "python": python, "nvidia-pytriton": pytriton_version}


def read_stamp(root: Path | None = None) -> dict | None:
    """The stamp of a prepared runtime, or None."""
    try:
        return json.loads(((root or default_root()) / STAMP_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _is_prepared(backend_directory: Path, root: Path, stamp: dict) -> bool:
    if read_stamp(root) != stamp:
        return False
    return all((backend_directory / "python" / name).is_file() for name in (*BACKEND_FILES, STUB_NAME))


def _copy_backend(distribution: _Distribution, stub: Path, backend_directory: Path) -> None:
    python_backend = backend_directory / "python"
    shutil.rmtree(backend_directory, ignore_errors=True)
    python_backend.mkdir(parents=True)
    for name in BACKEND_FILES:
        shutil.copy2(distribution.backend_source / name, python_backend / name)
    shutil.copy2(stub, python_backend / STUB_NAME)  # copy2 keeps the executable bit


def numpy_version(python_path: Sequence[Path]) -> str | None:
    """The numpy version installed in ``python_path`` (the first one found, as Python would import it)."""
    for path in python_path:
        for distribution in importlib.metadata.distributions(path=[str(path)]):
            if (distribution.metadata["Name"] or "").lower() == "numpy":
                return distribution.version
    return None


def check_python_path(python_path: Sequence[Path]) -> None:
    """Fail with the reason when the models' environment cannot work with this stub."""
    version = numpy_version(python_path)
    where = os.pathsep.join(str(path) for path in python_path)
    if version is None:
        raise TritonRuntimeError(
            f"the server's Python environment ({where}) has no numpy; install the serve extra there "
            "(pip install 'whisper-triton[serve]', or make setup)"
        )
    if int(version.split(".")[0]) > MAX_NUMPY_MAJOR:
        raise TritonRuntimeError(
            f"the server's Python environment ({where}) has numpy {version}, but the Python-backend stub of "
            "this tritonserver (nvidia-pytriton, Triton 2.51) is built for numpy 1.x: under numpy 2 its "
            "tensors arrive empty or garbled. Install numpy<2 there (the serve extra pins it; make setup "
            "installs requirements/dev.lock)."
        )


def _check_libraries(runtime: TritonRuntime, stub: Path) -> None:
    missing = missing_libraries([runtime.server_binary, stub], runtime.process_environment())
    if missing:
        raise TritonRuntimeError(
            "tritonserver or its Python stub cannot load shared libraries:\n  "
            + "\n  ".join(missing)
            + "\nThe stub embeds the system's libpython (Debian: apt-get install libpython3.X for the "
            "Python version in use); the rest comes from nvidia-pytriton (reinstall it with `make setup`)."
        )


def prepare_triton_runtime(
    root: Path | None = None,
    python_version: Sequence[int] = sys.version_info,
    python_path: Sequence[Path] | None = None,
) -> TritonRuntime:
    """Prepare (once) and return the Triton runtime under ``root`` (default: the user cache).

    Fast and idempotent when ``root`` already holds the backend for the same Python version and
    nvidia-pytriton version. ``python_version`` picks the stub (the stub embeds that version's system
    libpython). ``python_path`` is where the models find their third-party packages (default: this
    interpreter's environment); it must hold numpy 1.x (:func:`check_python_path`). Raises
    :class:`TritonRuntimeError` when the wheel, the stub, a shared library or a usable numpy is missing.
    """
    root = Path(root or default_root()).resolve()
    python = f"{python_version[0]}.{python_version[1]}"
    python_path = tuple(Path(p) for p in (python_path or environment_site_paths()))
    check_python_path(python_path)
    distribution = _find_distribution()
    stub = _stub_path(distribution, python)
    runtime = TritonRuntime(
        server_binary=distribution.server_binary,
        backend_directory=root / "backends",
        library_path=distribution.library_path,
        python_path=python_path,
    )
    stamp = _stamp(python, distribution.version)
    if not _is_prepared(runtime.backend_directory, root, stamp):
        with locked(root, LOCK_FILE):
            if not _is_prepared(runtime.backend_directory, root, stamp):  # another process may have won
                (root / STAMP_FILE).unlink(missing_ok=True)  # half-built until the new stamp is written
                _copy_backend(distribution, stub, runtime.backend_directory)
                (root / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")
    # Cheap (a few ms), so checked every time: a system library can disappear after preparation.
    _check_libraries(runtime, runtime.backend_directory / "python" / STUB_NAME)
    return runtime


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``whisper-triton runtime``: prepare the runtime and print it."""
    parser.description = __doc__.split("\n")[0]
    parser.add_argument("--root", type=Path, default=None, help=f"where to prepare it ({default_root()})")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        runtime = prepare_triton_runtime(args.root)
    except TritonRuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for field in dataclasses.fields(runtime):
        print(f"{field.name:18} {getattr(runtime, field.name)}")
    print(f"{'numpy':18} {numpy_version(runtime.python_path)}")
    return 0
