"""What a built model repository carries besides graphs and configs: the models' code and requirements.

Every Python model gets, next to its model.py, ``_whisper_triton_paths.py`` (its first import) and a copy
of the ``whisper_triton`` core package; the repository root gets ``requirements.txt``, the ``serve`` extra.
Nothing names a path of the build host, so the repository runs wherever it is moved.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# The model.py sources: model_repository/ of a checkout, or whisper_triton/model_repository/ of an installed
# wheel; in both layouts it sits beside this package's folder.
SOURCE_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
PATHS_MODULE = "_whisper_triton_paths.py"  # the first import of every model.py
REQUIREMENTS_FILE = "requirements.txt"
SERVE_EXTRA = "serve"


def copy_model_code(name: str, output: Path) -> None:
    """model.py of ``name`` with what it imports from this project: the paths module and whisper_triton."""
    source = SOURCE_REPOSITORY / name / "1"
    target = output / name / "1"
    target.mkdir(parents=True, exist_ok=True)
    for file in ("model.py", PATHS_MODULE):
        origin = SOURCE_REPOSITORY / file if file == PATHS_MODULE else source / file
        if origin.resolve() != (target / file).resolve():
            shutil.copy2(origin, target / file)
    bundle_core_package(target / "whisper_triton")


def bundle_core_package(target: Path) -> None:
    """A fresh copy of the ``whisper_triton`` core modules (not build/, client/, model sources) at ``target``.

    Pure Python, about 200 KB: the Triton models import it from next to their model.py, never from the
    machine that built them.
    """
    import whisper_triton

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for module in sorted(Path(whisper_triton.__file__).parent.glob("*.py")):
        shutil.copy2(module, target / module.name)


def server_requirements() -> list[str]:
    """What the models import besides our own code: whisper-triton's core dependencies and its `serve`
    extra, as the installed package declares them (pyproject.toml is the one list)."""
    import importlib.metadata

    requirements = []
    for line in importlib.metadata.requires("whisper-triton") or []:
        requirement, _, marker = line.partition(";")
        if not marker.strip() or marker.replace("'", '"').split() == ["extra", "==", f'"{SERVE_EXTRA}"']:
            requirements.append(requirement.strip())
    if not any(line.startswith("onnxruntime") for line in requirements):
        raise RuntimeError("the installed whisper-triton declares no serve extra; reinstall it (make setup)")
    return requirements


def write_requirements(output: Path) -> None:
    lines = [
        "# What this repository's Python models import besides the whisper_triton package bundled with them",
        "# (whisper-triton's core and serve requirements). In NVIDIA's container: pip install -r requirements.txt",
        *server_requirements(),
    ]
    (output / REQUIREMENTS_FILE).write_text("\n".join(lines) + "\n")
