"""Greedy, sampling and beam search over any Whisper decoder backend, with openai/whisper's quality guards.

:class:`Decoder` binds what never changes for a model (its backend, manifest and tokenizer) once, as
openai/whisper's ``DecodingTask`` does; its methods take what varies per call: encoder states, options
and what each window brings (:class:`WindowContext`).

The search knows nothing of its backend: a ``DecoderBackend`` (ONNX Runtime in-process, TensorRT,
PyTorch) computes the cross-attention keys/values once per window, runs one decoder step over new
tokens with its self-attention cache, and keeps a subset of the cache's rows and of the windows.
Everything is numpy at this seam.

Rows and windows: each window is decoded by ``k`` consecutive rows (1 for greedy, the beam width, or the
number of samples), and every row of a window reads that window's one copy of the cross-attention
keys/values (the backends broadcast it), so beam search costs one cross K/V per window, not per beam.
Windows that finish leave the batch with all their rows.

The logit rules are in :mod:`whisper_triton.logit_rules`. Finished sequences are ranked by their sum of
log-probabilities divided by their length. Beam search ends a hypothesis as CTranslate2 does (only an
end of text among the best ``beam_size`` candidates counts): it agrees with faster-whisper's beam search
on 40/40 corpus utterances (tests/test_decoding.py). :meth:`Decoder.decode_with_fallback` adds the
temperature fallback of :mod:`whisper_triton.guards`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from whisper_triton.constants import CHUNK_LENGTH, TIME_PRECISION
from whisper_triton.guards import needs_fallback
from whisper_triton.logit_rules import LogitRules, log_softmax, top_k_top_p
from whisper_triton.manifest import ModelManifest
from whisper_triton.options import MAX_PROMPT_TOKENS, DecodingOptions, OptionsError
from whisper_triton.results import Segment, WindowResult

# openai/whisper drops the conditioning text above this fallback temperature: it can feed a loop.
MAX_TEMPERATURE_WITH_PREVIOUS_TEXT = 0.5


class DecoderBackend(Protocol):
    def cross_attention(self, encoder_output: np.ndarray) -> Any:
        """Per-window state computed once from encoder states ``[W, n_audio_ctx, d_model]``."""

    def new_cache(self, rows: int) -> Any:
        """An empty self-attention cache for ``rows`` rows."""

    def step(self, tokens: np.ndarray, cache: Any, cross: Any) -> tuple[np.ndarray, Any]:
        """Logits ``[R, T, vocab]`` (float32) for new ``tokens`` ``[R, T]`` (int64) and the grown cache.

        ``R`` is a multiple of the windows in ``cross``: rows ``i*k .. i*k+k-1`` read window ``i``.
        """

    def select(self, cache: Any, cross: Any, rows: np.ndarray, windows: np.ndarray | None) -> tuple[Any, Any]:
        """The cache keeping ``rows`` (in that order; rows may repeat) and, unless ``windows`` is None,
        the cross state keeping ``windows``."""


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


@dataclass(frozen=True)
class WindowContext:
    """What one window brings to a decoding call besides its encoder states."""

    duration: float = float(CHUNK_LENGTH)  # seconds of audio: segments never end after it
    language: str | None = None  # the language to decode in (a detected one); None: the options' own
    previous: tuple[int, ...] = ()  # text tokens that condition the window (openai/whisper's previous text)


def check_language_and_task(manifest: ModelManifest, options: DecodingOptions) -> None:
    """OptionsError unless the model can honour ``options.language`` and ``options.task``."""
    if manifest.is_multilingual:
        if options.language is not None and options.language not in manifest.tokens.languages:
            raise OptionsError(
                f"language {options.language!r} is not one this model knows: {sorted(manifest.tokens.languages)}"
            )
    elif options.language not in (None, "en") or options.task != "transcribe":
        # English-only models have no language or task token: refuse the option rather than ignore it.
        raise OptionsError(
            f"this model is English-only: language {options.language!r} / task {options.task!r} are not available"
        )


def initial_prompt_tokens(tokenizer: Tokenizer, options: DecodingOptions) -> list[int]:
    """The text tokens of ``options.initial_prompt`` (none for a missing or blank prompt)."""
    if not options.initial_prompt or not options.initial_prompt.strip():
        return []
    return tokenizer.encode(" " + options.initial_prompt.strip())


@dataclass(frozen=True)
class _Run:
    """What every search of one batch of equal-length prompts shares."""

    backend: Any
    manifest: ModelManifest
    options: DecodingOptions
    prompts: list[list[int]]  # per window (equal lengths within a run)
    sot_index: int
    max_length: int
    rules: LogitRules


def _token_limit(options: DecodingOptions, prompt_length: int, sot_index: int, n_text_ctx: int) -> int:
    """The length at which a row stops: ``max_new_tokens`` generated, and transformers' ``max_length``.

    ``max_length`` counts from <|startoftranscript|> as transformers' ``generate`` does (its
    ``decoder_input_ids`` begin there; a text prompt before it does not count); at least one token is
    always generated so that every window gets an answer.
    """
    limit = min(prompt_length + options.max_new_tokens, n_text_ctx)
    if options.max_length is not None:
        limit = min(limit, max(sot_index + options.max_length, prompt_length + 1))
    return limit


class Decoder:
    """Decoding of encoder states for one model: its backend, manifest and tokenizer, bound once."""

    def __init__(self, backend: DecoderBackend, manifest: ModelManifest, tokenizer: Tokenizer):
        self.backend, self.manifest, self.tokenizer = backend, manifest, tokenizer

    def prompt(
        self, options: DecodingOptions, language: str | None = None, previous: tuple[int, ...] = ()
    ) -> tuple[list[int], int]:
        """The decoder prompt and the index of <|startoftranscript|> in it.

        ``language`` overrides ``options.language`` (a detected language); ``previous`` are text tokens
        that condition the decoder like openai/whisper's previous-text prompt (after ``initial_prompt``).
        """
        check_language_and_task(self.manifest, options)
        tokens = self.manifest.tokens
        context = initial_prompt_tokens(self.tokenizer, options) + list(previous)
        prompt = [tokens.sot_prev] + context[-MAX_PROMPT_TOKENS:] if context else []
        sot_index = len(prompt)
        prompt.append(tokens.sot)
        if self.manifest.is_multilingual:
            language = language or options.language or "en"
            if language not in tokens.languages:
                raise OptionsError(
                    f"unknown language {language!r}; this model knows {sorted(tokens.languages)}"
                )
            prompt += [
                tokens.languages[language],
                tokens.translate if options.task == "translate" else tokens.transcribe,
            ]
        if not options.timestamps:
            prompt.append(tokens.no_timestamps)
        return prompt, sot_index

    def detect_languages(self, encoder_output: np.ndarray) -> list[str]:
        """The likeliest language of each window: the language token scored after <|startoftranscript|>
        (as openai/whisper's ``detect_language``); English for English-only models."""
        count = encoder_output.shape[0]
        languages = self.manifest.tokens.languages
        if not self.manifest.is_multilingual or not languages:
            return ["en"] * count
        codes = list(languages)
        ids = np.array([languages[code] for code in codes])
        cross = self.backend.cross_attention(encoder_output)
        start = np.full((count, 1), self.manifest.tokens.sot, dtype=np.int64)
        logits, _ = self.backend.step(start, self.backend.new_cache(count), cross)
        return [codes[i] for i in np.argmax(logits[:, -1, ids], axis=1)]

    def decode(
        self,
        encoder_output: np.ndarray,
        options: DecodingOptions,
        contexts: list[WindowContext] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> list[WindowResult]:
        """Decode every window of ``encoder_output`` ``[W, n_audio_ctx, d_model]`` once.

        ``temperature`` (default ``options.temperature``): 0 searches (greedy, or beam search with
        ``options.beam_size`` beams); above 0 it samples ``options.best_of`` candidates per window (one
        when ``options.temperature`` itself asked for sampling) and keeps the most likely. ``contexts``
        holds one :class:`WindowContext` per window (default: 30 s, the options' language, no text).
        """
        count = encoder_output.shape[0]
        contexts = contexts or [WindowContext()] * count
        temperature = options.temperature if temperature is None else temperature
        built = [self.prompt(options, context.language, context.previous) for context in contexts]
        # One step feeds all rows, so windows are decoded in groups of equal prompt length.
        results: list[WindowResult | None] = [None] * count
        for length in sorted({len(prompt) for prompt, _ in built}):
            members = [i for i, (prompt, _) in enumerate(built) if len(prompt) == length]
            decoded = self._decode_equal(
                encoder_output if len(members) == count else encoder_output[members],  # no copy for one group
                options,
                [built[i] for i in members],
                [contexts[i] for i in members],
                (temperature, options.seed if seed is None else seed),
            )
            for i, result in zip(members, decoded, strict=True):
                results[i] = result
        return results

    def decode_with_fallback(
        self,
        encoder_output: np.ndarray,
        options: DecodingOptions,
        contexts: list[WindowContext] | None = None,
    ) -> list[WindowResult]:
        """``decode`` every window, then again at each fallback temperature only the windows still failing
        openai/whisper's guards (:func:`whisper_triton.guards.needs_fallback`)."""
        count = encoder_output.shape[0]
        contexts = contexts or [WindowContext()] * count
        temperatures = options.temperatures()
        results = self.decode(encoder_output, options, contexts, temperatures[0])
        pending = [i for i, result in enumerate(results) if needs_fallback(result, options)]
        for attempt, temperature in enumerate(temperatures[1:], start=1):
            if not pending:
                break
            keep_text = temperature <= MAX_TEMPERATURE_WITH_PREVIOUS_TEXT
            retried = self.decode(
                encoder_output[pending],
                options,
                [
                    contexts[i] if keep_text else dataclasses.replace(contexts[i], previous=())
                    for i in pending
                ],
                temperature,
                seed=(options.seed + attempt) % 2**32,
            )
            for index, result in zip(pending, retried, strict=True):
                results[index] = result
            pending = [i for i in pending if needs_fallback(results[i], options)]
        return results

    def _decode_equal(self, encoder_output, options, built, contexts, sampling) -> list[WindowResult]:
        """``decode`` of windows whose prompts ``built`` (prompt, sot index) have one length;
        ``sampling`` is (temperature, seed)."""
        manifest, (temperature, seed) = self.manifest, sampling
        prompts, sot_index = [prompt for prompt, _ in built], built[0][1]
        length, count = len(prompts[0]), len(prompts)
        if length >= manifest.n_text_ctx:
            raise OptionsError(
                f"prompt of {length} tokens leaves no room in the {manifest.n_text_ctx}-token context"
            )
        limit = _token_limit(options, length, sot_index, manifest.n_text_ctx)
        run = _Run(
            self.backend, manifest, options, prompts, sot_index, limit, LogitRules(manifest, options, length)
        )
        cross = self.backend.cross_attention(encoder_output)
        if temperature > 0:
            # openai/whisper samples best_of candidates at a fallback temperature; a client's own
            # temperature asks for one sample.
            candidates = 1 if options.temperature > 0 else options.best_of
            rng = np.random.default_rng(seed)
            sequences, sums, no_speech = _sample(run, cross, count, candidates, temperature, rng)
        elif options.beam_size > 1:
            sequences, sums, no_speech = _beam(run, cross, count)
        else:
            sequences, sums, no_speech = _sample(run, cross, count, 1, 0.0, None)
        results = []
        for index, (sampled, context) in enumerate(zip(sequences, contexts, strict=True)):
            text_tokens = [t for t in sampled if t < manifest.tokens.eot]
            language = (context.language or options.language or "en") if manifest.is_multilingual else "en"
            results.append(
                WindowResult(
                    tokens=sampled,
                    text=self.tokenizer.decode(text_tokens).strip(),
                    avg_logprob=float(sums[index] / (len(sampled) + 1)),
                    no_speech_prob=float(no_speech[index]),
                    temperature=float(temperature),
                    language=language,
                    segments=split_segments(sampled, manifest, self.tokenizer, float(context.duration)),
                )
            )
        return results


def _first_step(run: _Run, cross, windows: int, per_window: int):
    """Run the prompts (``per_window`` identical rows per window): tokens, last logits, cache, no-speech."""
    rows = windows * per_window
    tokens = np.repeat(np.asarray(run.prompts, dtype=np.int64), per_window, axis=0)
    logits, cache = run.backend.step(tokens, run.backend.new_cache(rows), cross)
    sot_logprobs = log_softmax(logits[::per_window, run.sot_index].astype(np.float32))
    no_speech = np.exp(sot_logprobs)[:, run.manifest.tokens.no_speech]
    return tokens, logits[:, -1].astype(np.float32), cache, no_speech


def _sample(run: _Run, cross, count: int, candidates: int, temperature: float, rng):
    """Greedy (``temperature`` 0) or sampling with ``candidates`` rows per window; the best row each."""
    eot = run.manifest.tokens.eot
    tokens, logits, cache, no_speech = _first_step(run, cross, count, candidates)
    rows = count * candidates
    sequences: list[list[int]] = [[] for _ in range(rows)]
    sum_logprobs = np.zeros(rows)
    active = np.arange(rows)  # original row of each row still decoding
    while True:
        logits = run.rules.apply(logits, tokens)
        logprobs = log_softmax(logits)
        if temperature > 0:
            # Gumbel-max: the argmax of logits / T plus Gumbel noise is a sample of softmax(logits / T),
            # for every row at once.
            scaled = top_k_top_p(logits / temperature, run.options)
            chosen = (scaled + rng.gumbel(size=scaled.shape)).argmax(axis=-1)
        else:
            chosen = logits.argmax(axis=-1)
        sum_logprobs[active] += logprobs[np.arange(len(active)), chosen]
        for row, token in zip(active, chosen, strict=True):
            sequences[row].append(int(token))
        tokens = np.concatenate([tokens, chosen[:, None].astype(np.int64)], axis=1)
        running = chosen != eot
        if tokens.shape[1] >= run.max_length or not running.any():
            break
        if not running.all():
            # A window leaves the batch once all its rows ended (rows of a window stay together, as the
            # backends' shared cross K/V needs); its ended rows keep stepping until then, ignored.
            window_running = np.add.reduceat(running, np.arange(0, len(running), candidates)) > 0
            if not window_running.all():
                keep_windows = np.flatnonzero(window_running)
                keep = (keep_windows[:, None] * candidates + np.arange(candidates)).reshape(-1)
                cache, cross = run.backend.select(cache, cross, keep, keep_windows)
                tokens, active, running = tokens[keep], active[keep], running[keep]
            done_rows = ~running
        else:
            done_rows = None
        step_logits, cache = run.backend.step(tokens[:, -1:], cache, cross)
        logits = step_logits[:, -1].astype(np.float32)
        if done_rows is not None and done_rows.any():
            logits[done_rows] = -np.inf  # a finished row only repeats end of text, which it never scores
            logits[done_rows, eot] = 0.0
    # A row that ended early repeated end of text (at log-probability 0) while its window went on.
    finished = [seq[: seq.index(eot)] if eot in seq else seq for seq in sequences]
    best, sums = [], np.zeros(count)
    for window in range(count):
        rows_of_window = range(window * candidates, (window + 1) * candidates)
        # openai/whisper's ranking without a length penalty: mean log-probability per token.
        pick = max(rows_of_window, key=lambda r: sum_logprobs[r] / max(len(finished[r]), 1))
        best.append(finished[pick])
        sums[window] = sum_logprobs[pick]
    return best, sums, no_speech


def _beam(run: _Run, cross, count: int):
    eot, beams = run.manifest.tokens.eot, run.options.beam_size
    sample_begin = len(run.prompts[0])
    tokens, logits, cache, no_speech = _first_step(run, cross, count, beams)
    scores = np.zeros(count * beams)
    scores[np.arange(count * beams) % beams != 0] = -np.inf  # identical beams: only the first one expands
    finished: list[dict[tuple[int, ...], float]] = [{} for _ in range(count)]
    live = np.arange(count)  # window index of each window still in the batch
    while True:
        logprobs = log_softmax(run.rules.apply(logits, tokens))
        next_tokens, sources, next_scores, done = [], [], [], np.zeros(len(live), dtype=bool)
        for slot, window in enumerate(live):
            rows = range(slot * beams, (slot + 1) * beams)
            candidates: dict[tuple[int, ...], tuple[float, int]] = {}
            for row in rows:
                if not np.isfinite(scores[row]):
                    continue
                top = np.argpartition(-logprobs[row], 2 * beams)[: 2 * beams]  # O(vocab), no full sort
                prefix = tuple(int(t) for t in tokens[row, sample_begin:])
                for token in top:
                    score = scores[row] + logprobs[row, token]
                    key = prefix + (int(token),)
                    if np.isfinite(score) and (key not in candidates or candidates[key][0] < score):
                        candidates[key] = (score, row)
            kept = 0
            ranked = sorted(candidates.items(), key=lambda item: -item[1][0])
            for rank, (key, (score, row)) in enumerate(ranked):
                if key[-1] == eot:
                    # As CTranslate2: a hypothesis ends only when its end of text ranks among the best
                    # `beams` candidates; a weak ending further down must not fill the finished pool
                    # before a better hypothesis ends (openai's rule did: WER 7.3% vs 5.9% on our corpus).
                    if rank < beams:
                        finished[window][key[:-1]] = score
                    continue
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
            done[slot] = len(finished[window]) >= beams
        sources_array = np.asarray(sources)
        tokens = np.concatenate(
            [tokens[sources_array], np.asarray(next_tokens, dtype=np.int64)[:, None]], axis=1
        )
        scores = np.asarray(next_scores)
        if tokens.shape[1] >= run.max_length or done.all():
            _collect_live(finished, live, tokens, scores, beams, sample_begin)
            break
        if done.any():  # finished windows leave the batch, with their beams and their cross K/V
            keep_slots = np.flatnonzero(~done)
            keep = (keep_slots[:, None] * beams + np.arange(beams)).reshape(-1)
            sources_array, tokens, scores, live = (
                sources_array[keep],
                tokens[keep],
                scores[keep],
                live[keep_slots],
            )
            cache, cross = run.backend.select(cache, cross, sources_array, keep_slots)
        else:
            cache, cross = run.backend.select(cache, cross, sources_array, None)
        step_logits, cache = run.backend.step(tokens[:, -1:], cache, cross)
        logits = step_logits[:, -1].astype(np.float32)
    results, sums = [], np.zeros(count)
    for window in range(count):
        pool = finished[window]
        if not pool:
            results.append([])
            continue
        # openai/whisper's ranking without a length penalty: mean log-probability per token.
        best = max(pool.items(), key=lambda item: item[1] / max(len(item[0]), 1))
        results.append([int(t) for t in best[0]])
        sums[window] = best[1]
    return results, sums, no_speech


def _collect_live(finished, windows, tokens, scores, beams, sample_begin):
    """Windows that stop with fewer than ``beams`` finished hypotheses count their live beams as finished."""
    for slot, window in enumerate(windows):
        if len(finished[window]) >= beams:
            continue
        for row in range(slot * beams, (slot + 1) * beams):
            if np.isfinite(scores[row]):
                finished[window].setdefault(tuple(int(t) for t in tokens[row, sample_begin:]), scores[row])


def split_segments(
    sampled: list[int], manifest: ModelManifest, tokenizer: Tokenizer, duration: float
) -> list[Segment]:
    """Timed segments of one window's tokens: text between timestamp pairs, else the whole window.

    Times are clipped to the window (``duration``): a segment never ends after the audio it came from.
    """
    begin = manifest.tokens.timestamp_begin
    stamps = [i for i, t in enumerate(sampled) if t >= begin]
    if not stamps:
        text = tokenizer.decode([t for t in sampled if t < manifest.tokens.eot]).strip()
        return [Segment(0.0, duration, text)] if text else []
    segments, start, text_tokens = [], None, []
    for token in sampled:
        if token >= begin:
            time = min((token - begin) * TIME_PRECISION, duration)
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
