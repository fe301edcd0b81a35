"""Text normalisation applied before any transcript is scored or compared.

We use OpenAI's English normaliser (packaged as ``whisper_normalizer``): it is what the Whisper paper and
the Hugging Face Open ASR leaderboard score with, so our WER numbers are comparable with theirs. It
lower-cases, removes punctuation and filler words ("uh", "um"), expands contractions and abbreviations
("Mr." -> "mister", "'s" -> "is"), writes numbers as digits and maps British to American spelling.

The server, the client and training all import this module, so it must stay free of torch, transformers
and plotting libraries.
"""

from functools import lru_cache

from whisper_normalizer.english import EnglishTextNormalizer


@lru_cache(maxsize=1)
def _english_normalizer() -> EnglishTextNormalizer:
    # Building the normaliser reads its spelling table (~1,700 entries) from JSON and compiles its
    # regexes, so one instance is shared. Calling it keeps no state, so sharing it across threads is safe.
    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Normalise an English transcript for scoring: ``"Mr. Smith's colour!"`` -> ``"mister smith is color"``.

    The result has single spaces between words and none at either end; it is empty when the text held
    only punctuation, fillers or whitespace.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects a str, got {type(text).__name__}: {text!r}")
    return _english_normalizer()(text)
