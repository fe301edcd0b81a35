"""Per-request decoding options: one frozen dataclass, validated once, parsed strictly from JSON.

Every option a client sends is honoured or rejected with a message naming it: unknown keys, wrong types
(``"false"`` is not a boolean) and out-of-range values are errors, never silently ignored. What depends on
the model (languages, the prompt's length in tokens) is checked by ``whisper_triton.serving.check_for_model``
before any audio is decoded.

The quality guards are openai/whisper's, with its defaults: a window whose text compresses too well
(``compression_ratio_threshold``, a repetition loop) or whose tokens are too unlikely
(``logprob_threshold``) is decoded again at the next temperature (``temperature_increment_on_fallback``),
sampling ``best_of`` candidates; a window whose no-speech probability exceeds ``no_speech_threshold``
while its tokens are unlikely is silence and gives no text. ``None`` switches a guard off.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from whisper_triton.errors import ClientError

MAX_BEAM_SIZE = 16
MAX_BEST_OF = 16
MAX_PROMPT_TOKENS = 223  # openai/whisper's prompt budget: n_text_ctx // 2 - 1 tokens
MAX_PROMPT_CHARACTERS = 4000  # refused before tokenising: far more than 223 tokens of any language
MAX_NEW_TOKENS = 224  # openai/whisper's sample_len: n_text_ctx // 2
MAX_TEXT_CONTEXT = 448  # the decoder's positions in every released Whisper model
MAX_OPTIONS_BYTES = 16384  # an OPTIONS JSON object larger than this is refused unparsed
ALIASES = {"num_beams": "beam_size"}  # transformers' generate() spelling


class OptionsError(ClientError, ValueError):
    """An invalid decoding option; the message names it and the accepted values. A ``ValueError`` too,
    as Python callers of ``DecodingOptions`` expect; servers catch it as a ``ClientError``."""


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 1  # 1: greedy search; > 1: beam search with this many beams (alias: num_beams)
    best_of: int = 5  # candidates sampled per window at a fallback temperature; the likeliest is kept
    temperature: float = 0.0  # 0: deterministic search; > 0: sample at this temperature (no beams)
    temperature_increment_on_fallback: float | None = 0.2  # next temperatures for failing windows; None: none
    compression_ratio_threshold: float | None = 2.4  # zlib ratio above which text is a repetition loop
    logprob_threshold: float | None = -1.0  # mean token log-probability below which a decode failed
    no_speech_threshold: float | None = 0.6  # <|nospeech|> probability above which (if unlikely) = silence
    timestamps: bool | None = None  # timed segments; None: on for audio over 30 s (better long-form WER)
    max_new_tokens: int = MAX_NEW_TOKENS  # tokens generated per 30-second window at most
    max_length: int | None = (
        None  # transformers' max_length: <|startoftranscript|> sequence plus generated tokens
    )
    initial_prompt: str | None = None  # text that conditions the decoder (spelling, names, style)
    language: str | None = None  # multilingual models: "en", "de", ...; None detects it per window
    task: str = "transcribe"  # multilingual models: "transcribe" or "translate" (to English)
    seed: int = 0  # random seed for sampling (temperature > 0, and the fallback temperatures)
    top_k: int | None = None  # sampling only: keep the k likeliest tokens
    top_p: float | None = None  # sampling only: keep the smallest set of tokens with this much probability
    repetition_penalty: float = 1.0  # > 1 discourages tokens already generated (transformers' rule)
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this size is generated twice in a window
    vad_filter: bool = False  # decode only the speech regions Silero VAD finds, drop the rest
    speech_threshold: float | None = 0.5  # a window is decoded only if Silero VAD scores some 32-ms frame
    # of it at least this likely speech (silence, noise, tones, music give no text); null decodes every one

    def __post_init__(self) -> None:
        _check_int("beam_size", self.beam_size, 1, MAX_BEAM_SIZE)
        _check_int("best_of", self.best_of, 1, MAX_BEST_OF)
        _check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _check_int("seed", self.seed, 0, 2**32 - 1)
        _check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, 0, MAX_TEXT_CONTEXT)
        if self.max_length is not None:
            _check_int("max_length", self.max_length, 2, MAX_TEXT_CONTEXT)
        _check_number("temperature", self.temperature, 0.0, 1.0)
        if self.temperature > 0 and self.beam_size > 1:
            raise OptionsError("temperature > 0 samples, which beam search does not do: use beam_size 1")
        _check_optional_number(
            "temperature_increment_on_fallback", self.temperature_increment_on_fallback, 0.0, 1.0
        )
        if self.temperature_increment_on_fallback == 0:
            raise OptionsError("temperature_increment_on_fallback must be above 0, or null for no fallback")
        _check_optional_number("compression_ratio_threshold", self.compression_ratio_threshold, 0.0, 1000.0)
        _check_optional_number("logprob_threshold", self.logprob_threshold, -1000.0, 0.0)
        _check_optional_number("no_speech_threshold", self.no_speech_threshold, 0.0, 1.0)
        _check_optional_number("speech_threshold", self.speech_threshold, 0.0, 1.0)
        _check_number("repetition_penalty", self.repetition_penalty, 1e-3, 100.0)
        if self.top_k is not None:
            _check_int("top_k", self.top_k, 1, 1_000_000)
        _check_optional_number("top_p", self.top_p, 0.0, 1.0)
        if self.top_p == 0:
            raise OptionsError("top_p must be above 0 (it keeps tokens up to this much probability)")
        if (self.top_k is not None or self.top_p is not None) and self.temperature == 0:
            raise OptionsError("top_k and top_p restrict sampling: they need temperature > 0")
        for name in ("timestamps",):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise OptionsError(f"{name} must be true, false or null, got {value!r}")
        if not isinstance(self.vad_filter, bool):
            raise OptionsError(f"vad_filter must be true or false, got {self.vad_filter!r}")
        if self.initial_prompt is not None:
            if not isinstance(self.initial_prompt, str):
                raise OptionsError(
                    f"initial_prompt must be a string, got {type(self.initial_prompt).__name__}"
                )
            if len(self.initial_prompt) > MAX_PROMPT_CHARACTERS:
                raise OptionsError(
                    f"initial_prompt has {len(self.initial_prompt)} characters; at most {MAX_PROMPT_CHARACTERS} "
                    f"(the decoder reads at most {MAX_PROMPT_TOKENS} tokens of it)"
                )
        if self.language is not None and not isinstance(self.language, str):
            raise OptionsError(
                f"language must be a language code such as 'en', or null, got {self.language!r}"
            )
        if self.task not in ("transcribe", "translate"):
            raise OptionsError(f"task must be 'transcribe' or 'translate', got {self.task!r}")

    @property
    def samples(self) -> bool:
        """Whether the first pass samples (the client asked for a temperature) rather than searches."""
        return self.temperature > 0

    def temperatures(self) -> list[float]:
        """The first pass's temperature, then the fallback temperatures up to 1.0."""
        schedule = [float(self.temperature)]
        step = self.temperature_increment_on_fallback
        while step is not None and schedule[-1] + step <= 1.0 + 1e-6:
            schedule.append(round(schedule[-1] + step, 6))
        return schedule

    def for_audio(self, seconds: float, window_seconds: float) -> DecodingOptions:
        """These options for audio of ``seconds``: ``timestamps`` decided when it was left as null."""
        if self.timestamps is not None:
            return self
        return dataclasses.replace(self, timestamps=seconds > window_seconds)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> DecodingOptions:
        """Options from a JSON object; ``None`` or an empty string gives the defaults."""
        if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
            return cls()
        if len(text) > MAX_OPTIONS_BYTES:
            raise OptionsError(f"OPTIONS is {len(text)} bytes; at most {MAX_OPTIONS_BYTES}")
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
        data = dict(data)
        for alias, name in ALIASES.items():
            if alias in data:
                if name in data and data[name] != data[alias]:
                    raise OptionsError(f"{alias} is another name for {name}: give one of them")
                data[name] = data.pop(alias)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise OptionsError(f"unknown option(s) {unknown}; accepted: {known} (and {sorted(ALIASES)})")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise OptionsError(f"{name} must be in [{low}, {high}], got {value}")


def _check_number(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise OptionsError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    if not low <= float(value) <= high:
        raise OptionsError(f"{name} must be in [{low:g}, {high:g}], got {value}")


def _check_optional_number(name: str, value, low: float, high: float) -> None:
    if value is not None:
        _check_number(name, value, low, high)
