"""openai/whisper's logit filters and transformers' sampling filters, on numpy logits ``[rows, vocab]``.

Rules (as openai/whisper's ``decoding.py``): suppress a leading blank and an immediate end of text,
suppress the model's non-speech tokens, and with timestamps: timestamps come in pairs, never decrease,
the first is at most ``max_initial_timestamp_index`` steps, and a timestamp is forced when the
timestamp tokens together are more likely than any text token. transformers' ``repetition_penalty``,
``no_repeat_ngram_size``, ``top_k`` and ``top_p`` follow its own rules and order.
"""

from __future__ import annotations

import numpy as np

from whisper_triton.manifest import ModelManifest
from whisper_triton.options import DecodingOptions


class LogitRules:
    """openai/whisper's logit filters for one decoding run (fixed prompt length)."""

    def __init__(self, manifest: ModelManifest, options: DecodingOptions, sample_begin: int):
        self.manifest, self.options, self.sample_begin = manifest, options, sample_begin
        self.suppress = np.array(sorted(set(manifest.suppress_tokens)), dtype=np.int64)
        self.begin_suppress = np.array(sorted(set(manifest.begin_suppress_tokens)), dtype=np.int64)

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Filter ``logits`` ``[B, vocab]`` in place given the sequences so far ``[B, L]``."""
        if tokens.shape[1] == self.sample_begin and self.begin_suppress.size:
            logits[:, self.begin_suppress] = -np.inf
        if self.suppress.size:
            logits[:, self.suppress] = -np.inf
        if self.options.timestamps:
            self._timestamp_rules(logits, tokens)
        if self.options.repetition_penalty != 1.0:
            self._repetition_penalty(logits, tokens)
        if self.options.no_repeat_ngram_size:
            self._no_repeat_ngrams(logits, tokens)
        return logits

    def _repetition_penalty(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        # transformers' rule, over the whole sequence so far (prompt included, as generate() does): a
        # positive logit is divided by the penalty, a negative one multiplied, so > 1 always discourages.
        penalty = self.options.repetition_penalty
        for row in range(tokens.shape[0]):
            seen = np.unique(tokens[row])
            values = logits[row, seen]
            logits[row, seen] = np.where(values > 0, values / penalty, values * penalty)

    def _no_repeat_ngrams(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        # transformers' rule: a token that would complete an n-gram already in the sequence is banned.
        n = self.options.no_repeat_ngram_size
        if tokens.shape[1] + 1 < n:
            return
        for row in range(tokens.shape[0]):
            sequence = tokens[row].tolist()
            prefix = tuple(sequence[len(sequence) - n + 1 :]) if n > 1 else ()
            banned = [
                sequence[i + n - 1]
                for i in range(len(sequence) - n + 1)
                if tuple(sequence[i : i + n - 1]) == prefix
            ]
            if banned:
                logits[row, banned] = -np.inf

    def _timestamp_rules(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        special = self.manifest.tokens
        begin, eot = special.timestamp_begin, special.eot
        logits[:, special.no_timestamps] = -np.inf
        for row in range(tokens.shape[0]):
            sampled = tokens[row, self.sample_begin :]
            last_was_timestamp = sampled.size >= 1 and sampled[-1] >= begin
            penultimate_was_timestamp = sampled.size < 2 or sampled[-2] >= begin
            if last_was_timestamp:
                if penultimate_was_timestamp:  # a pair just closed: text (or end of text) must follow
                    logits[row, begin:] = -np.inf
                else:  # an open timestamp: the next token must close it or end
                    logits[row, :eot] = -np.inf
            stamps = sampled[sampled >= begin]
            if stamps.size:
                # Timestamps never decrease; a closing timestamp may repeat the opening one.
                floor = stamps[-1] if last_was_timestamp and not penultimate_was_timestamp else stamps[-1] + 1
                logits[row, begin:floor] = -np.inf
        if tokens.shape[1] == self.sample_begin:
            logits[:, :begin] = -np.inf  # the first sampled token is a timestamp
            limit = self.manifest.max_initial_timestamp_index
            logits[:, begin + limit + 1 :] = -np.inf
        logprobs = log_softmax(logits)
        with np.errstate(divide="ignore"):
            timestamp_mass = np.logaddexp.reduce(logprobs[:, begin:], axis=-1)
        best_text = logprobs[:, :begin].max(axis=-1)
        logits[timestamp_mass > best_text, :begin] = -np.inf


def log_softmax(logits: np.ndarray) -> np.ndarray:
    peak = logits.max(axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    shifted = logits - peak
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_k_top_p(logits: np.ndarray, options: DecodingOptions) -> np.ndarray:
    """transformers' sampling filters, in its order: keep the ``top_k`` likeliest tokens, then the
    smallest set whose probability reaches ``top_p`` (always at least one token)."""
    if options.top_k is not None and options.top_k < logits.shape[1]:
        kth = np.partition(logits, -options.top_k, axis=1)[:, -options.top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    if options.top_p is not None and options.top_p < 1.0:
        order = np.argsort(-logits, axis=1)
        probs = np.exp(log_softmax(np.take_along_axis(logits, order, axis=1)))
        # Drop a token when the tokens above it already hold top_p of the probability.
        drop_sorted = (np.cumsum(probs, axis=1) - probs) >= options.top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=1)
        logits = np.where(drop, -np.inf, logits)
    return logits
