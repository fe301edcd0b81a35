"""`WhisperModelConfig`: the architecture of a Whisper model, from a named preset plus explicit overrides.

The presets are the dimensions of OpenAI's released checkpoints; any field can be overridden to make a
smaller (tests) or custom model. The config converts to a transformers ``WhisperConfig`` and round-trips
through JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_triton.constants import N_FRAMES, N_MELS

# Architecture of each released size (openai/whisper model dims). Vocabulary sizes differ between the
# English-only and the multilingual tokenizers; large-v3 also has 128 mel bins and one more language.
_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=384, layers=4, heads=6),
    "base": dict(d_model=512, layers=6, heads=8),
    "small": dict(d_model=768, layers=12, heads=12),
    "medium": dict(d_model=1024, layers=24, heads=16),
    "large": dict(d_model=1280, layers=32, heads=20),
    "large-v2": dict(d_model=1280, layers=32, heads=20),
    "large-v3": dict(d_model=1280, layers=32, heads=20),
}
# Sizes that OpenAI released as English-only (`*.en`) checkpoints as well.
_ENGLISH_ONLY_SIZES = ("tiny", "base", "small", "medium")

ENGLISH_VOCAB_SIZE = 51864  # GPT-2 BPE (50257) + 106 special tokens + 1501 timestamp tokens
MULTILINGUAL_VOCAB_SIZE = 51865  # multilingual BPE has one more language token than the English vocab
LARGE_V3_VOCAB_SIZE = 51866  # large-v3 added the Cantonese language token
LARGE_V3_N_MELS = 128
MAX_TARGET_POSITIONS = 448  # decoder context of every released Whisper model (tokens)
MAX_SOURCE_POSITIONS = N_FRAMES // 2  # 1500 encoder positions: the stride-2 conv halves 3000 mel frames


class ModelConfigError(ValueError):
    """An invalid model architecture; the message names the field and the rule it breaks."""


@dataclass(frozen=True)
class WhisperModelConfig:
    """Architecture of a Whisper encoder-decoder.

    ``model_size`` picks a preset (``tiny``, ``base``, ``small``, ``medium``, ``large``, ``large-v2``,
    ``large-v3``; a ``.en`` suffix means English-only); every other field left as ``None`` takes the
    preset's value, and any field given overrides it.
    """

    model_size: str = "tiny"
    use_multilingual: bool | None = None  # None: English-only for "*.en" names, multilingual otherwise
    num_encoder_layers: int | None = None
    num_decoder_layers: int | None = None
    encoder_attention_heads: int | None = None
    decoder_attention_heads: int | None = None
    d_model: int | None = None
    encoder_ffn_dim: int | None = None  # None: 4 * d_model, as in every released Whisper
    decoder_ffn_dim: int | None = None

    def __post_init__(self) -> None:
        size, english_suffix = _split_size(self.model_size)
        multilingual = self.use_multilingual
        if english_suffix and multilingual:
            raise ModelConfigError(
                f"model_size {self.model_size!r} is English-only but use_multilingual=True; "
                f"use model_size={size!r} for a multilingual model"
            )
        if multilingual is None:
            multilingual = not english_suffix
        preset = _PRESETS[size]
        d_model = self.d_model if self.d_model is not None else preset["d_model"]
        values = dict(
            model_size=self.model_size,
            use_multilingual=bool(multilingual),
            num_encoder_layers=_or(self.num_encoder_layers, preset["layers"]),
            num_decoder_layers=_or(self.num_decoder_layers, preset["layers"]),
            encoder_attention_heads=_or(self.encoder_attention_heads, preset["heads"]),
            decoder_attention_heads=_or(self.decoder_attention_heads, preset["heads"]),
            d_model=d_model,
            encoder_ffn_dim=_or(self.encoder_ffn_dim, 4 * d_model),
            decoder_ffn_dim=_or(self.decoder_ffn_dim, 4 * d_model),
        )
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        for name in (
            "num_encoder_layers",
            "num_decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "d_model",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelConfigError(f"{name} must be a positive integer, got {value!r}")
        for heads_field in ("encoder_attention_heads", "decoder_attention_heads"):
            heads = getattr(self, heads_field)
            if self.d_model % heads:
                raise ModelConfigError(
                    f"d_model ({self.d_model}) must be divisible by {heads_field} ({heads}): "
                    "each attention head gets d_model / heads dimensions"
                )

    @property
    def is_english_only(self) -> bool:
        return not self.use_multilingual

    @property
    def num_mel_bins(self) -> int:
        return LARGE_V3_N_MELS if _split_size(self.model_size)[0] == "large-v3" else N_MELS

    @property
    def vocab_size(self) -> int:
        if not self.use_multilingual:
            return ENGLISH_VOCAB_SIZE
        if _split_size(self.model_size)[0] == "large-v3":
            return LARGE_V3_VOCAB_SIZE
        return MULTILINGUAL_VOCAB_SIZE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> WhisperModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelConfigError(f"cannot read a WhisperModelConfig from {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(
                f"{path}: unknown WhisperModelConfig fields {unknown}; known: {sorted(known)}"
            )
        return cls(**data)

    def to_whisper_config(self, tokenizer=None, **overrides):
        """A transformers ``WhisperConfig`` with this architecture.

        Special token ids come from ``tokenizer`` when given (the only source of truth for ids); without
        one, transformers' defaults apply, which are those of the GPT-2-based Whisper vocabularies.
        """
        from transformers import WhisperConfig

        kwargs: dict[str, Any] = dict(
            vocab_size=self.vocab_size,
            num_mel_bins=self.num_mel_bins,
            d_model=self.d_model,
            encoder_layers=self.num_encoder_layers,
            decoder_layers=self.num_decoder_layers,
            encoder_attention_heads=self.encoder_attention_heads,
            decoder_attention_heads=self.decoder_attention_heads,
            encoder_ffn_dim=self.encoder_ffn_dim,
            decoder_ffn_dim=self.decoder_ffn_dim,
            max_source_positions=MAX_SOURCE_POSITIONS,
            max_target_positions=MAX_TARGET_POSITIONS,
        )
        if tokenizer is not None:
            kwargs["vocab_size"] = len(tokenizer)
            kwargs.update(_special_token_ids(tokenizer))
        kwargs.update(overrides)
        return WhisperConfig(**kwargs)

    @classmethod
    def from_whisper_config(cls, config) -> WhisperModelConfig:
        """The architecture of an existing transformers ``WhisperConfig``."""
        size = _closest_preset(config.d_model)
        multilingual = config.vocab_size >= MULTILINGUAL_VOCAB_SIZE
        return cls(
            model_size=size,
            use_multilingual=multilingual,
            num_encoder_layers=config.encoder_layers,
            num_decoder_layers=config.decoder_layers,
            encoder_attention_heads=config.encoder_attention_heads,
            decoder_attention_heads=config.decoder_attention_heads,
            d_model=config.d_model,
            encoder_ffn_dim=config.encoder_ffn_dim,
            decoder_ffn_dim=config.decoder_ffn_dim,
        )


def preset_names() -> list[str]:
    """Every accepted ``model_size``."""
    names = list(_PRESETS)
    names += [f"{size}.en" for size in _ENGLISH_ONLY_SIZES]
    return names


def _special_token_ids(tokenizer) -> dict[str, int]:
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return dict(decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)


def _split_size(model_size: str) -> tuple[str, bool]:
    if not isinstance(model_size, str):
        raise ModelConfigError(f"model_size must be a string, got {model_size!r}")
    name = model_size.removeprefix("openai/whisper-")
    english = name.endswith(".en")
    size = name.removesuffix(".en")
    if size not in _PRESETS or (english and size not in _ENGLISH_ONLY_SIZES):
        raise ModelConfigError(f"unknown model_size {model_size!r}; choose one of {preset_names()}")
    return size, english


def _closest_preset(d_model: int) -> str:
    for size, preset in _PRESETS.items():
        if preset["d_model"] == d_model:
            return size
    return "tiny"  # a custom width: the preset only supplies defaults, every field is set explicitly


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
