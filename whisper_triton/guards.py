"""openai/whisper's quality guards, batched: temperature fallback and silence detection per window.

A window fails when its text compresses too well (a repetition loop: zlib ratio above
``compression_ratio_threshold``) or its tokens are too unlikely (mean log-probability below
``logprob_threshold``). Failing windows are decoded again, together, at the next temperature of
``DecodingOptions.temperatures()``, sampling ``best_of`` candidates each; the others keep their result.
A window whose ``<|nospeech|>`` probability exceeds ``no_speech_threshold`` while its tokens are
unlikely is silence: it needs no fallback, and it gives no text. These are the rules; the decoding loop
that applies them is :meth:`whisper_triton.decoding.Decoder.decode_with_fallback`.
"""

from __future__ import annotations

import zlib

from whisper_triton.options import DecodingOptions
from whisper_triton.results import WindowResult


def compression_ratio(text: str) -> float:
    """UTF-8 length over zlib-compressed length: ~1-2 for speech, > 2.4 for repetition loops."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_silence(result: WindowResult, options: DecodingOptions) -> bool:
    """openai/whisper's rule: likely no speech, unless the decoded tokens are confidently likely."""
    if options.no_speech_threshold is None or result.no_speech_prob <= options.no_speech_threshold:
        return False
    return options.logprob_threshold is None or result.avg_logprob <= options.logprob_threshold


def needs_fallback(result: WindowResult, options: DecodingOptions) -> bool:
    if is_silence(result, options):
        return False  # silence: decoding again would only invent text
    if options.compression_ratio_threshold is not None:
        if compression_ratio(result.text) > options.compression_ratio_threshold:
            return True
    return options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold
