"""Presentation of evaluation results: the WER-by-length plot and the Markdown report.

Nothing here computes a metric; it renders the dicts that ``whisper_triton.metrics`` produces. matplotlib is
imported inside the plotting function only, so importing this module (and ``whisper_triton.metrics``) stays cheap.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_TITLE = "Whisper evaluation report"
DEFAULT_NUM_WORST = 10  # utterances listed in "Worst utterances"
DEFAULT_REPORT_FILE = "./evaluation_results/evaluation_report.md"  # where the API document writes it
REQUIRED_KEYS = ("wer", "cer", "word_accuracy", "sentence_accuracy")


def plot_wer_by_length(
    buckets: Sequence[dict[str, Any]],
    lengths: Sequence[float],
    wers: Sequence[float],
    output_path: str | Path,
    length_label: str = "reference words",
) -> Path:
    """Draw WER per length bucket (bars) beside each utterance's WER against its length (scatter); save a PNG.

    ``buckets`` are ``whisper_triton.metrics``'s ``wer_by_length`` buckets (``label``, ``wer``, ``num_utterances``).
    """
    # The object-oriented API, not pyplot: no global figure state and no GUI backend, so it is safe in
    # tests, in threads and on machines without a display.
    from matplotlib.figure import Figure

    output_path = Path(output_path)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    bars_ax, scatter_ax = fig.subplots(1, 2)

    positions = range(len(buckets))
    bars = bars_ax.bar(positions, [100 * b["wer"] for b in buckets], color="tab:blue")
    bars_ax.bar_label(bars, labels=[f"n={b['num_utterances']}" for b in buckets], padding=2)
    bars_ax.set_xticks(list(positions), [b["label"] for b in buckets], rotation=20)
    bars_ax.set_xlabel(length_label)
    bars_ax.set_ylabel("corpus WER (%)")
    bars_ax.set_title("WER by length bucket")
    bars_ax.margins(y=0.15)  # room for the n= labels above the tallest bar

    scatter_ax.scatter(lengths, [100 * w for w in wers], alpha=0.6, s=18, color="tab:orange")
    scatter_ax.set_xlabel(length_label)
    scatter_ax.set_ylabel("utterance WER (%)")
    scatter_ax.set_title("WER of each utterance")
    scatter_ax.grid(alpha=0.3)

    fig.savefig(output_path, dpi=100)
    return output_path


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def _cell(text: Any) -> str:
    """Make text safe inside a Markdown table cell."""
    text = str(text).replace("|", "\\|").replace("\n", " ").strip()
    return text if text else "*(empty)*"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _summary(metrics: dict[str, Any]) -> list[str]:
    rows = []
    if "num_utterances" in metrics:
        rows.append(("Utterances scored", metrics["num_utterances"]))
    if metrics.get("num_skipped_utterances"):
        rows.append(
            ("Utterances skipped (reference and prediction empty)", metrics["num_skipped_utterances"])
        )
    if "num_reference_words" in metrics:
        rows.append(("Reference words", metrics["num_reference_words"]))
    rows += [
        ("Word error rate (WER)", _percent(metrics["wer"])),
        ("Character error rate (CER)", _percent(metrics["cer"])),
        ("Word accuracy (hits / reference words)", _percent(metrics["word_accuracy"])),
        ("Sentence accuracy (no word error)", _percent(metrics["sentence_accuracy"])),
    ]
    if "normalized" in metrics:
        rows.append(
            (
                "Text normalised before scoring",
                "yes (OpenAI's English normaliser)" if metrics["normalized"] else "no",
            )
        )
    return ["## Summary", "", *_table(("Metric", "Value"), rows)]


def _error_breakdown(metrics: dict[str, Any]) -> list[str]:
    kinds = ("substitutions", "deletions", "insertions")
    if not all(k in metrics for k in (*kinds, "num_reference_words")):
        return []
    total = sum(metrics[k] for k in kinds)
    words = metrics["num_reference_words"]
    rows = [
        (
            k.capitalize(),
            metrics[k],
            _percent(metrics[k] / words),
            _percent(metrics[k] / total) if total else "-",
        )
        for k in kinds
    ]
    rows.append(("Total errors", total, _percent(total / words), _percent(1) if total else "-"))
    lines = [
        "## Error breakdown",
        "",
        *_table(("Kind", "Count", "Per reference word", "Share of errors"), rows),
    ]
    if "hits" in metrics:
        lines += [f"Correct words (hits): {metrics['hits']} of {words}.", ""]
    return lines


def _length_section(metrics: dict[str, Any], output_path: Path) -> list[str]:
    lines = []
    by_length = metrics.get("wer_by_length")
    if by_length and by_length.get("buckets"):
        rows = [
            (b["label"], b["num_utterances"], b["num_reference_words"], _percent(b["wer"]))
            for b in by_length["buckets"]
        ]
        lines += _table(("Length", "Utterances", "Reference words", "WER"), rows)
    plot = metrics.get("files", {}).get("wer_by_length_png")
    if plot and Path(plot).is_file():
        # Relative to the report, so the report and its plot can be moved or published together.
        relative = Path(os.path.relpath(Path(plot).resolve(), output_path.parent.resolve())).as_posix()
        lines += [f"![WER by utterance length]({relative})", ""]
    return ["## WER by utterance length", "", *lines] if lines else []


def _confusion_section(metrics: dict[str, Any]) -> list[str]:
    lines = []
    if metrics.get("top_substitutions"):
        rows = [(s["reference"], s["prediction"], s["count"]) for s in metrics["top_substitutions"]]
        lines += [
            "### Substitutions (reference → prediction)",
            "",
            *_table(("Reference", "Prediction", "Count"), rows),
        ]
    for key, heading in (("top_deletions", "Deleted words"), ("top_insertions", "Inserted words")):
        if metrics.get(key):
            lines += [
                f"### {heading}",
                "",
                *_table(("Word", "Count"), [(d["word"], d["count"]) for d in metrics[key]]),
            ]
    return ["## Most frequent confusions", "", *lines] if lines else []


def _read_per_utterance(metrics: dict[str, Any]) -> list[dict[str, Any]] | None:
    path = metrics.get("files", {}).get("per_utterance_csv")
    if not path or not Path(path).is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _worst_utterances(per_utterance: Sequence[dict[str, Any]], num_worst: int) -> list[str]:
    # Rows read back from per_utterance.csv hold strings; an empty "wer" marks a skipped utterance.
    scored = [r for r in per_utterance if r.get("wer") not in (None, "") and int(r["errors"]) > 0]
    scored.sort(key=lambda r: (float(r["wer"]), int(r["errors"])), reverse=True)
    if not scored or num_worst <= 0:
        return []
    rows = [
        (
            r.get("id", ""),
            _percent(float(r["wer"])),
            r["errors"],
            r["normalized_reference"],
            r["normalized_prediction"],
        )
        for r in scored[:num_worst]
    ]
    header = ("ID", "WER", "Errors", "Reference (as scored)", "Prediction (as scored)")
    return [f"## Worst utterances (top {len(rows)} by WER)", "", *_table(header, rows)]


def create_evaluation_report(
    metrics: dict[str, Any],
    output_file: str | Path = DEFAULT_REPORT_FILE,
    title: str = DEFAULT_TITLE,
    per_utterance: Sequence[dict[str, Any]] | None = None,
    num_worst: int = DEFAULT_NUM_WORST,
    *,
    output_path: str | Path | None = None,
) -> Path:
    """Write a Markdown report of ``metrics`` (from ``evaluate_model`` or ``compute_detailed_wer_metrics``)
    to ``output_file`` and return its path. ``output_path`` is the same parameter's earlier name.

    Sections appear when their data is present: summary, error breakdown, WER by length with the plot
    (linked by a path relative to the report), top confusions and the ``num_worst`` worst utterances.
    The per-utterance rows come from ``per_utterance`` or else from the CSV that ``evaluate_model`` wrote.
    """
    if output_path is not None:
        if output_file != DEFAULT_REPORT_FILE:
            raise TypeError("give output_file or output_path (its earlier name), not both")
        output_file = output_path
    missing = [k for k in REQUIRED_KEYS if k not in metrics]
    if missing:
        raise ValueError(
            f"metrics lack {missing}; pass the dict from evaluate_model or compute_detailed_wer_metrics"
        )
    output_file = Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    if per_utterance is None:
        per_utterance = _read_per_utterance(metrics)

    lines = [f"# {title}", ""]
    lines += _summary(metrics)
    lines += _error_breakdown(metrics)
    lines += _length_section(metrics, output_file)
    lines += _confusion_section(metrics)
    if per_utterance:
        lines += _worst_utterances(per_utterance, num_worst)
    output_file.write_text("\n".join(lines), encoding="utf-8")
    return output_file
