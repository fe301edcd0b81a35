"""The manifest saved with an exported model: every value the server, client and tests need to run it.

``whisper-triton build`` writes ``manifest.json`` next to the ONNX files; the serving code reads dims, mel
parameters, special token ids and suppression lists from it instead of repeating them. Token ids come
from the model's tokenizer at export time (never written as numbers in code).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SpecialTokens:
    sot: int  # <|startoftranscript|>
    eot: int  # <|endoftext|>
    no_timestamps: int  # <|notimestamps|>
    timestamp_begin: int  # <|0.00|>; every id from here on is a timestamp, 0.02 s apart
    sot_prev: int  # <|startofprev|>: precedes an initial prompt
    no_speech: int  # <|nocaptions|> (<|nospeech|> in large-v3): its probability flags silence
    transcribe: int | None = None  # task tokens exist only in multilingual vocabularies
    translate: int | None = None
    languages: dict[str, int] = field(default_factory=dict)  # "en" -> id of <|en|>


@dataclass(frozen=True)
class ModelManifest:
    n_mels: int
    n_audio_ctx: int  # encoder positions (1500 for 30 s)
    n_text_ctx: int  # decoder positions (448)
    d_model: int
    n_vocab: int
    decoder_layers: int
    decoder_heads: int
    is_multilingual: bool
    tokens: SpecialTokens
    suppress_tokens: tuple[int, ...]
    begin_suppress_tokens: tuple[int, ...]
    max_initial_timestamp_index: int  # first timestamp at most this many 20 ms steps (50 = 1 s)
    precision: str = "fp32"
    source: str = ""
    format: int = FORMAT_VERSION

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ModelManifest:
        path = Path(directory) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"cannot read the model manifest {path}: {exc} (rebuild with whisper-triton build)"
            ) from exc
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{path} has manifest format {data.get('format')}, expected {FORMAT_VERSION}; rebuild it"
            )
        data["tokens"] = SpecialTokens(**data["tokens"])
        data["suppress_tokens"] = tuple(data["suppress_tokens"])
        data["begin_suppress_tokens"] = tuple(data["begin_suppress_tokens"])
        return cls(**data)


def manifest_from_model(model, processor, precision: str = "fp32", source: str = "") -> ModelManifest:
    """The manifest of a transformers Whisper model and its processor."""
    tokenizer = processor.tokenizer
    config, generation = model.config, model.generation_config

    vocabulary = tokenizer.get_vocab()  # includes the added special tokens

    def token(text: str) -> int | None:
        return vocabulary.get(text)

    no_speech = token("<|nospeech|>") or token("<|nocaptions|>")
    languages = {}
    for text, token_id in (getattr(generation, "lang_to_id", None) or {}).items():
        languages[text.strip("<|>")] = int(token_id)
    tokens = SpecialTokens(
        sot=token("<|startoftranscript|>"),
        eot=token("<|endoftext|>"),
        no_timestamps=token("<|notimestamps|>"),
        timestamp_begin=token("<|notimestamps|>") + 1,  # openai/whisper: timestamps follow <|notimestamps|>
        sot_prev=token("<|startofprev|>"),
        no_speech=no_speech,
        transcribe=token("<|transcribe|>") if languages else None,
        translate=token("<|translate|>") if languages else None,
        languages=languages,
    )
    return ModelManifest(
        n_mels=config.num_mel_bins,
        n_audio_ctx=config.max_source_positions,
        n_text_ctx=config.max_target_positions,
        d_model=config.d_model,
        n_vocab=config.vocab_size,
        decoder_layers=config.decoder_layers,
        decoder_heads=config.decoder_attention_heads,
        is_multilingual=bool(getattr(generation, "is_multilingual", bool(languages))),
        tokens=tokens,
        suppress_tokens=tuple(int(t) for t in (generation.suppress_tokens or ())),
        begin_suppress_tokens=tuple(int(t) for t in (generation.begin_suppress_tokens or ())),
        max_initial_timestamp_index=_max_initial_timestamp_index(generation),
        precision=precision,
        source=source,
    )


DEFAULT_MAX_INITIAL_TIMESTAMP_INDEX = 50  # openai/whisper's max_initial_timestamp: 1.0 s of 0.02-s steps


def _max_initial_timestamp_index(generation) -> int:
    """The generation config's own value (0 is a legal one: the first timestamp is <|0.00|>), else
    openai/whisper's."""
    value = getattr(generation, "max_initial_timestamp_index", None)
    return DEFAULT_MAX_INITIAL_TIMESTAMP_INDEX if value is None else int(value)
