"""Text <-> token ids for serving, with the `tokenizers` library alone (no transformers in the server)."""

from __future__ import annotations

from pathlib import Path


class TextTokenizer:
    """Encodes prompts and decodes text tokens with the model's own ``tokenizer.json``."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(list(tokens), skip_special_tokens=False)
