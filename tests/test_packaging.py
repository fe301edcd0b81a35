"""The installable package: import names that clash with nothing, a reproducible wheel that carries the
model sources, and dependencies that match what each part imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, pip_wheel

PYTHON = sys.executable
BIN = Path(sys.executable).parent

# Each part of the project: the folders whose modules it runs, and the extras it is installed with.
PARTS = {
    "serve": (["model_repository"], ["serve"]),
    "client": (["client"], ["client"]),
    "train": (["training"], ["train"]),
    "build": (["build", "whisper_triton/server"], ["build", "train", "serve"]),
}
# Imported, but provided by the deployment rather than by pip: Triton's Python backend gives its models
# triton_python_backend_utils; TensorRT (and torch, for its GPU buffers) exist only in a GPU image, where
# docs/deployment.md installs them (`--runtime tensorrt`), and whisper_triton.tensorrt_runtime imports them lazily.
PROVIDED = {"triton_python_backend_utils", "tensorrt"}
PROVIDED_BY_MODULE = {"whisper_triton.tensorrt_runtime": {"torch"}}
# Imported by one module for an optional feature, from an extra of its own: the module says how to get it
# when it is missing (whisper-triton stream --mic).
OPTIONAL_EXTRAS = {"whisper_triton.client.microphone": ("mic", {"sounddevice"})}
FIRST_PARTY = {"whisper_triton", "training", "_whisper_triton_paths", "tests"}


def _module_files() -> dict[str, Path]:
    """Import name -> file, for every module of the project in this checkout."""
    files = {}
    for path in (REPO_ROOT / "whisper_triton").glob("*.py"):
        files[f"whisper_triton.{path.stem}"] = path
    for path in (REPO_ROOT / "whisper_triton" / "server").glob("*.py"):
        files[f"whisper_triton.server.{path.stem}"] = path
    for folder, package in (("build", "whisper_triton.build"), ("client", "whisper_triton.client")):
        for path in (REPO_ROOT / folder).glob("*.py"):
            files[f"{package}.{path.stem}"] = path
    for path in (REPO_ROOT / "training").glob("*.py"):
        files[f"training.{path.stem}"] = path
    for path in (REPO_ROOT / "model_repository").glob("*/1/model.py"):
        files[f"model:{path.parts[-3]}"] = path
    return files


def _imports(path: Path) -> set[str]:
    """Every module name imported anywhere in ``path`` (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _third_party(start: list[str], files: dict[str, Path]) -> dict[str, set[str]]:
    """Top-level third-party import names reached from the modules ``start`` (following our own modules),
    each with the modules that import it."""
    seen, todo, found = set(), list(start), {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(files[module]):
            top = name.split(".")[0]
            if name in files:
                todo.append(name)
            elif top in FIRST_PARTY or top in sys.stdlib_module_names or top in PROVIDED:
                continue
            elif top in OPTIONAL_EXTRAS.get(module, ("", set()))[1]:
                continue  # checked against its own extra by test_optional_imports_are_declared_by_their_extra
            elif top not in PROVIDED_BY_MODULE.get(module, set()):
                found.setdefault(top, set()).add(module)
    return found


def _declared(extras: list[str]) -> set[str]:
    """Normalised distribution names that installing whisper-triton with ``extras`` brings in directly."""
    names, pending, done = set(), list(extras), set()
    for line in importlib.metadata.requires("whisper-triton"):
        requirement, _, marker = line.partition(";")
        if not marker.strip():
            names.add(_normalise(requirement))
    while pending:
        extra = pending.pop()
        done.add(extra)
        for line in importlib.metadata.requires("whisper-triton"):
            requirement, _, marker = line.partition(";")
            if marker.replace("'", '"').split() != ["extra", "==", f'"{extra}"']:
                continue
            self_reference = re.fullmatch(r"whisper-triton\[(.+)\]", requirement.strip())
            if self_reference:
                pending += [e for e in self_reference.group(1).split(",") if e not in done]
            else:
                names.add(_normalise(requirement))
    return names


def _normalise(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("part", sorted(PARTS))
def test_every_import_of_a_part_is_declared_by_its_extras(part):
    """Static: follow each part's imports through our own modules; every third-party module must come
    from a distribution that the part's extras (or the core) declare."""
    folders, extras = PARTS[part]
    files = _module_files()
    start = [
        name
        for name, path in files.items()
        if any(path.is_relative_to(REPO_ROOT / folder) for folder in folders)
        or (part == "serve" and name.startswith("model:"))
    ]
    assert start, part
    declared = _declared(extras)
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for top, importers in _third_party(start, files).items():
        distributions = {_normalise(d) for d in providers.get(top, [top])}
        if not distributions & declared:
            undeclared[top] = (sorted(distributions), sorted(importers))
    assert not undeclared, f"{part}: imported but not declared by {extras}: {undeclared}"


def test_optional_imports_are_declared_by_their_extra():
    files = _module_files()
    providers = importlib.metadata.packages_distributions()
    for module, (extra, imports) in OPTIONAL_EXTRAS.items():
        tops = {name.split(".")[0] for name in _imports(files[module])}
        assert imports <= tops, f"{module} no longer imports {imports - tops}: update OPTIONAL_EXTRAS"
        for top in imports:
            distributions = {_normalise(d) for d in providers.get(top, [top])}
            assert distributions & _declared([extra]), f"{top} ({module}) is not in the {extra} extra"


def test_the_server_side_needs_only_the_serve_extra():
    """The serve part must not reach torch, transformers or tritonclient: a Triton image needs only
    requirements.txt (the build writes it from the serve extra)."""
    files = _module_files()
    reached = _third_party([name for name in files if name.startswith("model:")], files)
    assert not {"torch", "transformers", "tritonclient", "jiwer", "whisper_normalizer"} & set(reached)


@pytest.mark.slow
def test_wheel_is_reproducible_and_carries_the_model_sources(project_wheel, tmp_path):
    """A second `pip wheel .` of the same tree lists the same files (setuptools' scratch folder is not our
    build/ folder), everything installs under whisper_triton or training, and the model.py sources are in."""
    source, wheel = project_wheel
    pip_wheel(source, tmp_path)
    first, second = (sorted(zipfile.ZipFile(w).namelist()) for w in (wheel, next(tmp_path.glob("*.whl"))))
    assert first == second
    top_levels = {name.split("/")[0] for name in first if ".dist-info/" not in name}
    assert top_levels == {"whisper_triton", "training"}
    for model in ("whisper_features", "whisper_encoder", "whisper_decoder", "whisper_stream"):
        assert f"whisper_triton/model_repository/{model}/1/model.py" in first
    assert "whisper_triton/model_repository/_whisper_triton_paths.py" in first
    assert "whisper_triton/build/repository.py" in first and "whisper_triton/client/api.py" in first
    assert "whisper_triton/server/launcher.py" in first
    assert not any("/lib/" in name or "bdist" in name for name in first)
    assert not (source / "build" / "lib").exists(), "setuptools' scratch folder landed in our build/"
    metadata = zipfile.ZipFile(wheel).read(next(n for n in first if n.endswith("entry_points.txt")))
    assert b"whisper-triton = whisper_triton.cli:main" in metadata


def test_pypa_build_coexists_with_ours(tmp_path):
    """PyPA's `build` is installed in this very environment (dev extra): it keeps its import name and its
    `python -m build`, while our build part answers as whisper_triton.build and `whisper-triton build`."""
    code = (
        "import build, whisper_triton.build.repository as ours; "
        "print(build.__file__); print(ours.__file__); print(build.__version__)"
    )
    result = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    theirs, ours, version = result.stdout.split()
    assert Path(theirs).parts[-3:] == ("site-packages", "build", "__init__.py")
    assert Path(ours) == REPO_ROOT / "build" / "repository.py"
    pypa = subprocess.run([PYTHON, "-m", "build", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert pypa.returncode == 0 and pypa.stdout.startswith(f"build {version}"), pypa.stdout + pypa.stderr
    ours_cli = subprocess.run([BIN / "whisper-triton", "build", "--help"], capture_output=True, text=True)
    assert ours_cli.returncode == 0 and "--runtime" in ours_cli.stdout


def test_console_script_lists_its_commands_and_refuses_unknown_ones():
    listing = subprocess.run([BIN / "whisper-triton", "--help"], capture_output=True, text=True)
    assert listing.returncode == 0
    for command in ("build", "serve", "transcribe", "stream", "eval", "perf"):
        assert re.search(rf"^  {command} ", listing.stdout, re.MULTILINE), listing.stdout
    unknown = subprocess.run([BIN / "whisper-triton", "frobnicate"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr


def test_lock_pins_every_declared_requirement():
    """requirements/dev.lock (what make setup and CI install) pins each distribution the extras name,
    except torch, which make setup installs first from TORCH_SPEC."""
    pinned = {}
    for line in (REPO_ROOT / "requirements" / "dev.lock").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", line)
        if match:
            pinned[_normalise(match.group(1))] = match.group(2)
    missing = _declared(["dev", "build", "client", "train", "serve"]) - set(pinned) - {"torch"}
    assert not missing, f"declared in pyproject.toml but not locked (run make lock): {sorted(missing)}"
    assert pinned["numpy"].startswith("1."), "the serve extra needs numpy 1.x (see pyproject.toml)"
