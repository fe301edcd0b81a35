"""openai/whisper's quality guards, batched: temperature fallback and silence detection per window.

A window fails when its text compresses too well (a repetition loop: zlib ratio above
``compression_ratio_threshold``) or its tokens are too unlikely (mean log-probability below
``logprob_threshold``). Failing windows are decoded again, together, at the next temperature of
``DecodingOptions.temperatures()``, sampling ``best_of`` candidates each; the others keep their result.
A window whose ``<|nospeech|>`` probability exceeds ``no_speech_threshold`` while its tokens are
unlikely is silence: it needs no fallback, and it gives no text.
"""

from __future__ import annotations

import zlib

import numpy as np

from whisper_triton.decoding import WindowResult, decode
from whisper_triton.options import DecodingOptions


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


def decode_with_fallback(
    backend,
    encoder_output: np.ndarray,
    manifest,
    options: DecodingOptions,
    tokenizer,
    durations: np.ndarray,
    languages: list[str | None] | None = None,
    previous: list[list[int]] | None = None,
) -> list[WindowResult]:
    """``decode`` every window, then again at each fallback temperature only the windows still failing."""
    count = encoder_output.shape[0]
    languages = languages or [None] * count
    previous = previous or [[] for _ in range(count)]
    temperatures = options.temperatures()
    results = decode(
        backend, encoder_output, manifest, options, tokenizer, durations, temperatures[0], languages, previous
    )
    pending = [i for i, result in enumerate(results) if needs_fallback(result, options)]
    for attempt, temperature in enumerate(temperatures[1:], start=1):
        if not pending:
            break
        retried = decode(
            backend,
            encoder_output[pending],
            manifest,
            options,
            tokenizer,
            durations[pending],
            temperature,
            [languages[i] for i in pending],
            # openai/whisper drops the conditioning text once the temperature is high: it can feed a loop.
            [previous[i] if temperature <= 0.5 else [] for i in pending],
            seed=(options.seed + attempt) % 2**32,
        )
        for index, result in zip(pending, retried, strict=True):
            results[index] = result
        pending = [i for i in pending if needs_fallback(results[i], options)]
    return results
