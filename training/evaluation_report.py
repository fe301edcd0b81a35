"""The evaluation report and plot, from ``whisper_triton.evaluation_report`` (shared with the client)."""

from whisper_triton.evaluation_report import (
    DEFAULT_NUM_WORST,
    DEFAULT_REPORT_FILE,
    DEFAULT_TITLE,
    create_evaluation_report,
    plot_wer_by_length,
)

__all__ = [
    "DEFAULT_NUM_WORST",
    "DEFAULT_REPORT_FILE",
    "DEFAULT_TITLE",
    "create_evaluation_report",
    "plot_wer_by_length",
]
