"""Word and character error rates of transcripts, and the files an evaluation run leaves behind.

All rates are corpus-level, as in the Whisper paper and the Open ASR leaderboard: the edits of every
utterance are summed and divided by the total reference length, so a long utterance weighs more than a
short one (the mean of per-utterance WERs would let a two-word clip count as much as a minute of speech).
Alignments come from jiwer; both sides are normalised with ``whisper_triton.text.normalize_text`` first,
unless ``normalize=False``, in which case the text is compared as given (case and punctuation count) with
only its whitespace collapsed.

Empty references. WER is undefined for a reference with no words (errors divided by zero words):
  * reference and prediction both empty (a silent clip, or fillers like "uh" that normalisation removes):
    nothing can be wrong, so the utterance is skipped with a logged warning and counted in
    ``num_skipped_utterances``; it is in no rate, sentence accuracy included.
  * reference empty, prediction not (e.g. a hallucination on silence, or a clip whose transcript went
    missing): ValueError naming the index. Adding its insertions to the corpus total would charge them to
    other utterances' words and no per-utterance WER could be reported for it; in practice it is a data
    problem to fix upstream, as the Open ASR leaderboard does by dropping empty references before scoring.

This module imports neither torch nor transformers, and matplotlib only when a plot is drawn, so the
client and CI can score transcripts cheaply: training (``training.metrics`` re-exports it) and the
client's ``whisper-triton eval`` share it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer

from whisper_triton.constants import CHUNK_LENGTH
from whisper_triton.evaluation_report import create_evaluation_report, plot_wer_by_length
from whisper_triton.text import normalize_text

__all__ = [
    "compute_cer",
    "compute_detailed_wer_metrics",
    "compute_wer",
    "create_evaluation_report",
    "evaluate_model",
]

logger = logging.getLogger(__name__)

Texts = str | Sequence[str]

DEFAULT_TOP_N = 10  # confusions listed per kind: enough to show a pattern, short enough to read

# "WER by utterance length" buckets, given by their upper bounds: bucket i holds (bound[i-1], bound[i]].
WORD_BUCKET_BOUNDS = (5, 10, 20, 40, math.inf)  # reference words
# Seconds of audio. CHUNK_LENGTH (30 s, one encoder window) is a bound because longer audio is split into
# windows and stitched back together, a source of errors worth seeing on its own.
DURATION_BUCKET_BOUNDS = (5.0, 10.0, 20.0, float(CHUNK_LENGTH), math.inf)

# jiwer's alignment chunk types, named as the counts we report.
_EDIT_NAMES = {"equal": "hits", "substitute": "substitutions", "delete": "deletions", "insert": "insertions"}

METRICS_FILE = "metrics.json"
PER_UTTERANCE_FILE = "per_utterance.csv"
PLOT_FILE = "wer_by_length.png"
PER_UTTERANCE_COLUMNS = (
    "id", "duration_s", "reference", "prediction", "normalized_reference", "normalized_prediction",
    "num_reference_words", "hits", "substitutions", "deletions", "insertions", "errors", "wer",
)  # fmt: skip


@dataclass(frozen=True)
class _Utterances:
    """The caller's pairs, validated, with the text jiwer scores (normalised if asked)."""

    raw_references: list[str]
    raw_predictions: list[str]
    references: list[str]  # as scored: normalised, or the raw text when normalize=False
    predictions: list[str]
    scored: list[int]  # indices of the pairs that are scored
    skipped: list[int]  # indices of the pairs skipped because both sides are empty

    def scored_texts(self) -> dict[str, list[str]]:
        """jiwer's keyword arguments for the scored pairs."""
        return {
            "reference": [self.references[i] for i in self.scored],
            "hypothesis": [self.predictions[i] for i in self.scored],
        }


def _as_list(texts: Texts, name: str) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}: {text!r}")
    return texts


def _collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def _prepare(predictions: Texts, references: Texts, normalize: bool) -> _Utterances:
    """Validate the pairs, normalise them and sort out empty references (see the module docstring)."""
    raw_predictions = _as_list(predictions, "predictions")
    raw_references = _as_list(references, "references")
    if len(raw_predictions) != len(raw_references):
        raise ValueError(
            f"got {len(raw_predictions)} predictions but {len(raw_references)} references; "
            "they must pair up one to one"
        )
    if not raw_references:
        raise ValueError("no utterances to score: predictions and references are empty")

    # Without normalisation the text is scored as given, except that words are split on any whitespace:
    # jiwer alone would split on spaces only and count runs of spaces as characters in CER.
    prepare = normalize_text if normalize else _collapse_whitespace
    texts_predictions = [prepare(t) for t in raw_predictions]
    texts_references = [prepare(t) for t in raw_references]
    after = " after normalisation" if normalize else ""
    scored, skipped = [], []
    for i, (ref, pred) in enumerate(zip(texts_references, texts_predictions, strict=True)):
        if ref:
            scored.append(i)
        elif not pred:
            skipped.append(i)
        else:
            raise ValueError(
                f"reference {i} is empty{after} (given {raw_references[i]!r}) but its prediction is not "
                f"({raw_predictions[i]!r}), so its WER is undefined; remove utterances without a transcript "
                "before scoring"
            )
    if skipped:
        logger.warning(
            "skipped %d utterance(s) whose reference and prediction are both empty%s: indices %s",
            len(skipped),
            after,
            skipped,
        )
    if not scored:
        raise ValueError(f"nothing to score: all {len(skipped)} references are empty{after}")
    return _Utterances(raw_references, raw_predictions, texts_references, texts_predictions, scored, skipped)


def compute_wer(predictions: Texts, references: Texts, normalize: bool = True) -> float:
    """Corpus word error rate: (substitutions + deletions + insertions) / reference words.

    Can exceed 1 when the predictions insert many words. See the module docstring for empty references.
    """
    utterances = _prepare(predictions, references, normalize)
    return float(jiwer.process_words(**utterances.scored_texts()).wer)


def compute_cer(predictions: Texts, references: Texts, normalize: bool = True) -> float:
    """Corpus character error rate: character edits / reference characters, spaces between words included.

    Counting spaces follows jiwer and Hugging Face ``evaluate``, so the numbers compare with theirs.
    """
    utterances = _prepare(predictions, references, normalize)
    return float(jiwer.process_characters(**utterances.scored_texts()).cer)


def _edit_counts(alignment: list[jiwer.AlignmentChunk]) -> dict[str, int]:
    counts = dict.fromkeys(_EDIT_NAMES.values(), 0)
    for chunk in alignment:
        # An insertion covers no reference words, so it is measured on the prediction side.
        if chunk.type == "insert":
            counts["insertions"] += chunk.hyp_end_idx - chunk.hyp_start_idx
        else:
            counts[_EDIT_NAMES[chunk.type]] += chunk.ref_end_idx - chunk.ref_start_idx
    return counts


def _confusions(words: jiwer.WordOutput, top_n: int) -> dict[str, list[dict[str, Any]]]:
    """The most frequent substitution pairs, deleted words and inserted words, from jiwer's alignments."""
    substituted, deleted, inserted = Counter(), Counter(), Counter()
    for ref_words, hyp_words, alignment in zip(
        words.references, words.hypotheses, words.alignments, strict=True
    ):
        for chunk in alignment:
            ref_span = ref_words[chunk.ref_start_idx : chunk.ref_end_idx]
            hyp_span = hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx]
            if chunk.type == "substitute":  # a substitution chunk pairs its words one to one
                substituted.update(zip(ref_span, hyp_span, strict=True))
            elif chunk.type == "delete":
                deleted.update(ref_span)
            elif chunk.type == "insert":
                inserted.update(hyp_span)
    return {
        "top_substitutions": [
            {"reference": ref, "prediction": hyp, "count": n}
            for (ref, hyp), n in substituted.most_common(top_n)
        ],
        "top_deletions": [{"word": w, "count": n} for w, n in deleted.most_common(top_n)],
        "top_insertions": [{"word": w, "count": n} for w, n in inserted.most_common(top_n)],
    }


def _score(
    predictions: Texts, references: Texts, normalize: bool, top_n: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Corpus metrics and one row per input utterance (skipped ones have ``wer`` None)."""
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    utterances = _prepare(predictions, references, normalize)
    words = jiwer.process_words(**utterances.scored_texts())
    chars = jiwer.process_characters(**utterances.scored_texts())

    rows = [
        {
            "reference": utterances.raw_references[i],
            "prediction": utterances.raw_predictions[i],
            "normalized_reference": utterances.references[i],
            "normalized_prediction": utterances.predictions[i],
            "num_reference_words": 0,
            **dict.fromkeys(_EDIT_NAMES.values(), 0),
            "errors": 0,
            "wer": None,
        }
        for i in range(len(utterances.references))
    ]
    for i, ref_words, alignment in zip(utterances.scored, words.references, words.alignments, strict=True):
        counts = _edit_counts(alignment)
        errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
        rows[i].update(counts, num_reference_words=len(ref_words), errors=errors, wer=errors / len(ref_words))

    num_reference_words = words.hits + words.substitutions + words.deletions
    exact = sum(1 for i in utterances.scored if rows[i]["errors"] == 0)
    metrics = {
        "wer": float(words.wer),
        "cer": float(chars.cer),
        # hits / reference words: the share of reference words transcribed correctly (HTK's "Correct").
        # Unlike 1 - WER it stays in [0, 1], because insertions are left out; they are counted by WER.
        "word_accuracy": words.hits / num_reference_words,
        # Utterances with no word error after normalisation, over the utterances scored.
        "sentence_accuracy": exact / len(utterances.scored),
        "hits": words.hits,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "num_reference_words": num_reference_words,
        "num_predicted_words": sum(len(h) for h in words.hypotheses),
        "num_reference_characters": sum(len(r) for r in chars.references),
        "num_utterances": len(utterances.scored),
        "num_skipped_utterances": len(utterances.skipped),
        "normalized": normalize,
        **_confusions(words, top_n),
    }
    return metrics, rows


def compute_detailed_wer_metrics(
    predictions: Texts, references: Texts, normalize: bool = True, top_n: int = DEFAULT_TOP_N
) -> dict[str, Any]:
    """WER, CER and their breakdown for a corpus.

    Keys: ``wer``, ``cer``, ``word_accuracy`` (hits / reference words), ``sentence_accuracy`` (share of
    utterances with no word error), ``hits``, ``substitutions``, ``deletions``, ``insertions``,
    ``num_reference_words``, ``num_predicted_words``, ``num_reference_characters``, ``num_utterances``
    (scored), ``num_skipped_utterances``, ``normalized``, and the ``top_n`` most frequent confusions:
    ``top_substitutions`` (``{"reference", "prediction", "count"}``), ``top_deletions`` and
    ``top_insertions`` (``{"word", "count"}``), most frequent first.
    """
    metrics, _ = _score(predictions, references, normalize, top_n)
    return metrics


def _bucket_label(lower: float, upper: float, by_duration: bool) -> str:
    if by_duration:
        return f"> {lower:g} s" if math.isinf(upper) else f"{lower:g}-{upper:g} s"
    return f"> {lower:g} words" if math.isinf(upper) else f"{lower + 1:g}-{upper:g} words"


def _wer_by_length(
    lengths: list[float], rows: list[dict[str, Any]], by_duration: bool
) -> list[dict[str, Any]]:
    """Corpus WER within each length bucket that holds a scored utterance."""
    bounds = DURATION_BUCKET_BOUNDS if by_duration else WORD_BUCKET_BOUNDS
    members: list[list[dict[str, Any]]] = [[] for _ in bounds]
    for length, row in zip(lengths, rows, strict=True):
        if row["wer"] is not None:
            # The first bound >= length; the last bound is infinite, so there always is one.
            members[next(i for i, upper in enumerate(bounds) if length <= upper)].append(row)
    buckets = []
    for lower, upper, bucket in zip((0, *bounds[:-1]), bounds, members, strict=True):
        if not bucket:
            continue
        words = sum(r["num_reference_words"] for r in bucket)
        errors = sum(r["errors"] for r in bucket)
        buckets.append(
            {
                "label": _bucket_label(lower, upper, by_duration),
                "lower": lower,
                "upper": None if math.isinf(upper) else upper,  # JSON has no infinity
                "num_utterances": len(bucket),
                "num_reference_words": words,
                "errors": errors,
                "wer": errors / words,
            }
        )
    return buckets


def _check_per_utterance(values: Sequence | None, n: int, name: str) -> None:
    if values is not None and len(values) != n:
        raise ValueError(f"got {len(values)} {name} for {n} utterances")


def evaluate_model(
    predictions: Texts,
    references: Texts,
    output_dir: str | Path,
    ids: Sequence[str] | None = None,
    durations: Sequence[float] | None = None,
    *,
    normalize: bool = True,
    top_n: int = DEFAULT_TOP_N,
) -> dict[str, Any]:
    """Score a model's transcripts and write the evaluation files into ``output_dir``.

    Writes ``metrics.json`` (what this returns), ``per_utterance.csv`` (one row per input utterance in
    input order; ``wer`` is blank for skipped ones) and ``wer_by_length.png`` (WER per length bucket, and
    each utterance's WER against its length: audio seconds when ``durations`` is given, else reference
    words). Returns ``compute_detailed_wer_metrics``'s dict plus ``wer_by_length`` (the buckets) and
    ``files`` (the paths written). ``ids`` default to the utterances' positions.
    """
    metrics, rows = _score(predictions, references, normalize, top_n)
    _check_per_utterance(ids, len(rows), "ids")
    _check_per_utterance(durations, len(rows), "durations")
    if durations is not None:
        durations = [float(d) for d in durations]
        bad = [i for i, d in enumerate(durations) if not (math.isfinite(d) and d >= 0)]
        if bad:
            raise ValueError(f"durations must be finite seconds >= 0; bad at indices {bad}")
    for i, row in enumerate(rows):
        row["id"] = str(ids[i]) if ids is not None else str(i)
        row["duration_s"] = durations[i] if durations is not None else None

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / PER_UTTERANCE_FILE
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PER_UTTERANCE_COLUMNS)
        writer.writeheader()
        # None (unknown duration, unscored WER) is written as an empty cell.
        writer.writerows({k: "" if row[k] is None else row[k] for k in PER_UTTERANCE_COLUMNS} for row in rows)

    by_duration = durations is not None
    lengths = durations if by_duration else [row["num_reference_words"] for row in rows]
    buckets = _wer_by_length(lengths, rows, by_duration)
    scored = [(x, row["wer"]) for x, row in zip(lengths, rows, strict=True) if row["wer"] is not None]
    plot_path = plot_wer_by_length(
        buckets,
        [x for x, _ in scored],
        [w for _, w in scored],
        output_dir / PLOT_FILE,
        length_label="duration (s)" if by_duration else "reference words",
    )

    metrics["wer_by_length"] = {"by": "duration_s" if by_duration else "reference_words", "buckets": buckets}
    metrics["files"] = {
        "metrics_json": str(output_dir / METRICS_FILE),
        "per_utterance_csv": str(csv_path),
        "wer_by_length_png": str(plot_path),
    }
    with (output_dir / METRICS_FILE).open("w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
    return metrics
