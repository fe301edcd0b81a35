"""Per-request decoding options: one frozen dataclass, validated once, parsed strictly from JSON.

Every option a client sends is honoured or rejected with a message naming it: unknown keys, wrong types
(``"false"`` is not a boolean) and out-of-range values are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

MAX_BEAM_SIZE = 16
MAX_PROMPT_TOKENS = 223  # openai/whisper keeps the last n_text_ctx // 2 - 1 tokens of a prompt
MAX_NEW_TOKENS = 224  # openai/whisper's sample_len: n_text_ctx // 2


class OptionsError(ValueError):
    """An invalid decoding option; the message names it and the accepted values."""


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 1  # 1: greedy search; > 1: beam search with this many beams
    temperature: float = 0.0  # 0: deterministic; > 0: sample (greedy only) at this temperature
    timestamps: bool = False  # predict timestamp tokens and return timed segments
    max_new_tokens: int = MAX_NEW_TOKENS  # tokens generated per 30-second window at most
    initial_prompt: str | None = None  # text that conditions the decoder (spelling, names, style)
    language: str | None = None  # multilingual models: "en", "de", ...; None detects it
    task: str = "transcribe"  # multilingual models: "transcribe" or "translate" (to English)
    seed: int = 0  # random seed for sampling when temperature > 0

    def __post_init__(self) -> None:
        _check_int("beam_size", self.beam_size, 1, MAX_BEAM_SIZE)
        _check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _check_int("seed", self.seed, 0, 2**32 - 1)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise OptionsError(f"temperature must be a number in [0, 1], got {self.temperature!r}")
        if not 0.0 <= float(self.temperature) <= 1.0:
            raise OptionsError(f"temperature must be in [0, 1], got {self.temperature}")
        if self.temperature > 0 and self.beam_size > 1:
            raise OptionsError("temperature > 0 samples, which beam search does not do: use beam_size 1")
        if not isinstance(self.timestamps, bool):
            raise OptionsError(f"timestamps must be true or false, got {self.timestamps!r}")
        if self.initial_prompt is not None and not isinstance(self.initial_prompt, str):
            raise OptionsError(f"initial_prompt must be a string, got {type(self.initial_prompt).__name__}")
        if self.language is not None and not isinstance(self.language, str):
            raise OptionsError(f"language must be a language code such as 'en', got {self.language!r}")
        if self.task not in ("transcribe", "translate"):
            raise OptionsError(f"task must be 'transcribe' or 'translate', got {self.task!r}")

    @classmethod
    def from_json(cls, text: str | bytes | None) -> DecodingOptions:
        """Options from a JSON object; ``None`` or an empty string gives the defaults."""
        if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
            return cls()
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OptionsError(f"OPTIONS must be a JSON object: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> DecodingOptions:
        if not isinstance(data, dict):
            raise OptionsError(f"OPTIONS must be a JSON object, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise OptionsError(f"unknown option(s) {unknown}; accepted: {known}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise OptionsError(f"{name} must be in [{low}, {high}], got {value}")
