"""Greedy and beam search over any Whisper decoder backend, with openai/whisper's logit rules.

The search knows nothing of its backend: a ``DecoderBackend`` (ONNX Runtime in-process, TensorRT,
PyTorch) computes the cross-attention keys/values once per window, runs one decoder step over new
tokens with its self-attention cache, and selects cache rows (to drop finished windows and to reorder
beams). Everything is numpy at this seam.

Rules (as openai/whisper's ``decoding.py``): suppress a leading blank and an immediate end of text,
suppress the model's non-speech tokens, and with timestamps: timestamps come in pairs, never decrease,
the first is at most ``max_initial_timestamp_index`` steps, and a timestamp is forced when the
timestamp tokens together are more likely than any text token. Beam search ranks finished sequences by
their sum of log-probabilities divided by their length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from whisper_triton.constants import TIME_PRECISION
from whisper_triton.manifest import ModelManifest
from whisper_triton.options import MAX_PROMPT_TOKENS, DecodingOptions


class DecoderBackend(Protocol):
    def cross_attention(self, encoder_output: np.ndarray) -> Any:
        """Per-window state computed once from encoder states ``[N, n_audio_ctx, d_model]``."""

    def new_cache(self, batch: int) -> Any:
        """An empty self-attention cache for ``batch`` rows."""

    def step(self, tokens: np.ndarray, cache: Any, cross: Any) -> tuple[np.ndarray, Any]:
        """Logits ``[B, T, vocab]`` (float32) for new ``tokens`` ``[B, T]`` (int64), and the grown cache."""

    def select(self, cache: Any, cross: Any, rows: np.ndarray, same_windows: bool = False) -> tuple[Any, Any]:
        """Cache and cross state keeping ``rows`` (in that order; rows may repeat).

        ``same_windows``: every row keeps the window it had (a beam reorder), so the cross state, which
        is identical for all rows of a window, needs no copy: only the self-attention cache moves.
        """


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


@dataclass
class Segment:
    start: float
    end: float
    text: str

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}


@dataclass
class WindowResult:
    tokens: list[int]  # sampled tokens, without the prompt and the final end of text
    text: str
    avg_logprob: float
    no_speech_prob: float
    segments: list[Segment] = field(default_factory=list)


def build_prompt(
    manifest: ModelManifest, options: DecodingOptions, tokenizer: Tokenizer
) -> tuple[list[int], int]:
    """The decoder prompt for ``options`` and the index of <|startoftranscript|> in it."""
    tokens = manifest.tokens
    prompt: list[int] = []
    if options.initial_prompt and options.initial_prompt.strip():
        prompt = [tokens.sot_prev] + tokenizer.encode(" " + options.initial_prompt.strip())[
            -MAX_PROMPT_TOKENS:
        ]
    sot_index = len(prompt)
    prompt.append(tokens.sot)
    if manifest.is_multilingual:
        language = options.language or "en"
        if language not in tokens.languages:
            raise ValueError(f"unknown language {language!r}; this model knows {sorted(tokens.languages)}")
        prompt += [
            tokens.languages[language],
            tokens.translate if options.task == "translate" else tokens.transcribe,
        ]
    elif options.language not in (None, "en") or options.task != "transcribe":
        # English-only models take no language or task token (see LESSONS.md): reject, never ignore.
        raise ValueError(
            f"this model is English-only: language {options.language!r} / task {options.task!r} are not available"
        )
    if not options.timestamps:
        prompt.append(tokens.no_timestamps)
    return prompt, sot_index


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
        return logits

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


def decode(
    backend: DecoderBackend,
    encoder_output: np.ndarray,
    manifest: ModelManifest,
    options: DecodingOptions,
    tokenizer: Tokenizer,
    window_durations: np.ndarray | None = None,
) -> list[WindowResult]:
    """Decode every window of ``encoder_output`` ``[N, n_audio_ctx, d_model]`` with ``options``."""
    prompt, sot_index = build_prompt(manifest, options, tokenizer)
    count = encoder_output.shape[0]
    max_length = min(len(prompt) + options.max_new_tokens, manifest.n_text_ctx)
    if len(prompt) >= manifest.n_text_ctx:
        raise ValueError(
            f"prompt of {len(prompt)} tokens leaves no room in the {manifest.n_text_ctx}-token context"
        )
    rules = LogitRules(manifest, options, len(prompt))
    cross = backend.cross_attention(encoder_output)
    if options.beam_size == 1:
        sequences, sum_logprobs, no_speech = _greedy(
            backend, cross, prompt, sot_index, count, max_length, rules, manifest, options
        )
    else:
        sequences, sum_logprobs, no_speech = _beam(
            backend, cross, prompt, sot_index, count, max_length, rules, manifest, options
        )
    durations = window_durations if window_durations is not None else np.full(count, 30.0)
    results = []
    for index, sampled in enumerate(sequences):
        text_tokens = [t for t in sampled if t < manifest.tokens.eot]
        results.append(
            WindowResult(
                tokens=sampled,
                text=tokenizer.decode(text_tokens).strip(),
                avg_logprob=float(sum_logprobs[index] / (len(sampled) + 1)),
                no_speech_prob=float(no_speech[index]),
                segments=split_segments(sampled, manifest, tokenizer, float(durations[index])),
            )
        )
    return results


def _first_step(backend, cross, prompt, sot_index, rows, manifest):
    tokens = np.tile(np.asarray(prompt, dtype=np.int64), (rows, 1))
    logits, cache = backend.step(tokens, backend.new_cache(rows), cross)
    no_speech = np.exp(log_softmax(logits[:, sot_index].astype(np.float32)))[:, manifest.tokens.no_speech]
    return tokens, logits[:, -1].astype(np.float32), cache, no_speech


def _greedy(backend, cross, prompt, sot_index, count, max_length, rules, manifest, options):
    eot = manifest.tokens.eot
    tokens, logits, cache, no_speech = _first_step(backend, cross, prompt, sot_index, count, manifest)
    rng = np.random.default_rng(options.seed)
    sequences: list[list[int]] = [[] for _ in range(count)]
    sum_logprobs = np.zeros(count)
    active = np.arange(count)  # window index of each row still decoding
    while True:
        logits = rules.apply(logits, tokens)
        logprobs = log_softmax(logits)
        if options.temperature > 0:
            probs = np.exp(log_softmax(logits / options.temperature))
            chosen = np.array([rng.choice(probs.shape[1], p=p / p.sum()) for p in probs])
        else:
            chosen = logits.argmax(axis=-1)
        sum_logprobs[active] += logprobs[np.arange(len(active)), chosen]
        for row, token in zip(active, chosen, strict=True):
            sequences[row].append(int(token))
        tokens = np.concatenate([tokens, chosen[:, None].astype(np.int64)], axis=1)
        running = chosen != eot
        if tokens.shape[1] >= max_length or not running.any():
            break
        if not running.all():  # drop finished rows from the batch and the caches
            keep = np.flatnonzero(running)
            cache, cross = backend.select(cache, cross, keep)
            tokens, active = tokens[keep], active[keep]
        step_logits, cache = backend.step(tokens[:, -1:], cache, cross)
        logits = step_logits[:, -1].astype(np.float32)
    return [[t for t in seq if t != eot] for seq in sequences], sum_logprobs, no_speech


def _beam(backend, cross, prompt, sot_index, count, max_length, rules, manifest, options):
    eot, beams = manifest.tokens.eot, options.beam_size
    # One row per (window, beam); all beams of a window start from the same prompt.
    repeat = np.repeat(np.arange(count), beams)
    _, first_logits, cache, no_speech = _first_step(backend, cross, prompt, sot_index, count, manifest)
    cache, cross = backend.select(cache, cross, repeat)
    tokens = np.tile(np.asarray(prompt, dtype=np.int64), (count * beams, 1))
    logits = first_logits[repeat]
    scores = np.zeros(count * beams)
    scores[np.arange(count * beams) % beams != 0] = -np.inf  # identical beams: only the first one expands
    finished: list[dict[tuple[int, ...], float]] = [{} for _ in range(count)]
    done = np.zeros(count, dtype=bool)
    while True:
        logprobs = log_softmax(rules.apply(logits, tokens))
        next_tokens, sources, next_scores = [], [], []
        for window in range(count):
            rows = range(window * beams, (window + 1) * beams)
            if done[window]:  # keep a placeholder row so the batch layout stays fixed
                next_tokens += [eot] * beams
                sources += list(rows)
                next_scores += [-np.inf] * beams
                continue
            candidates: dict[tuple[int, ...], tuple[float, int]] = {}
            for row in rows:
                if not np.isfinite(scores[row]):
                    continue
                top = np.argpartition(-logprobs[row], beams + 1)[: beams + 1]  # O(vocab), no full sort
                prefix = tuple(int(t) for t in tokens[row, len(prompt) :])
                for token in top:
                    score = scores[row] + logprobs[row, token]
                    key = prefix + (int(token),)
                    if np.isfinite(score) and (key not in candidates or candidates[key][0] < score):
                        candidates[key] = (score, row)
            kept = 0
            for key, (score, row) in sorted(candidates.items(), key=lambda item: -item[1][0]):
                if key[-1] == eot:
                    if len(finished[window]) < beams:
                        finished[window][key[:-1]] = score
                else:
                    next_tokens.append(key[-1])
                    sources.append(row)
                    next_scores.append(score)
                    kept += 1
                if kept == beams:
                    break
            while kept < beams:  # fewer live candidates than beams: pad with dead rows
                next_tokens.append(eot)
                sources.append(rows[0])
                next_scores.append(-np.inf)
                kept += 1
            if len(finished[window]) >= beams:
                done[window] = True
        sources_array = np.asarray(sources)
        tokens = np.concatenate(
            [tokens[sources_array], np.asarray(next_tokens, dtype=np.int64)[:, None]], axis=1
        )
        scores = np.asarray(next_scores)
        if done.all() or tokens.shape[1] >= max_length:
            break
        cache, cross = backend.select(cache, cross, sources_array, same_windows=True)
        step_logits, cache = backend.step(tokens[:, -1:], cache, cross)
        logits = step_logits[:, -1].astype(np.float32)
    results, sums = [], np.zeros(count)
    for window in range(count):
        pool = dict(finished[window])
        if len(pool) < beams:  # ran out of length: live beams count as finished
            for row in range(window * beams, (window + 1) * beams):
                if np.isfinite(scores[row]):
                    pool.setdefault(tuple(int(t) for t in tokens[row, len(prompt) :]), scores[row])
        if not pool:
            results.append([])
            continue
        # openai/whisper's ranking without a length penalty: mean log-probability per token.
        best = max(pool.items(), key=lambda item: item[1] / max(len(item[0]), 1))
        results.append([int(t) for t in best[0]])
        sums[window] = best[1]
    return results, sums, no_speech


def split_segments(
    sampled: list[int], manifest: ModelManifest, tokenizer: Tokenizer, duration: float
) -> list[Segment]:
    """Timed segments of one window's tokens: text between timestamp pairs, else the whole window."""
    begin = manifest.tokens.timestamp_begin
    stamps = [i for i, t in enumerate(sampled) if t >= begin]
    if not stamps:
        text = tokenizer.decode([t for t in sampled if t < manifest.tokens.eot]).strip()
        return [Segment(0.0, duration, text)] if text else []
    segments, start, text_tokens = [], None, []
    for token in sampled:
        if token >= begin:
            time = (token - begin) * TIME_PRECISION
            if start is None:
                start = time
            else:
                text = tokenizer.decode(text_tokens).strip()
                if text:
                    segments.append(Segment(start, max(time, start), text))
                start, text_tokens = None, []
        elif token < manifest.tokens.eot:
            text_tokens.append(token)
    if text_tokens:  # text after the last timestamp with no closing one runs to the window's end
        text = tokenizer.decode(text_tokens).strip()
        if text:
            segments.append(Segment(start if start is not None else 0.0, duration, text))
    return segments
