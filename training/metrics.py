"""The API document's ``utils.metrics``: WER/CER and evaluation files, from ``whisper_triton.metrics``.

They live in the shared core because the client's ``whisper-triton eval`` scores a deployed server with
the same code, and the client must install without training's dependencies.
"""

from whisper_triton.metrics import (
    DEFAULT_TOP_N,
    DURATION_BUCKET_BOUNDS,
    METRICS_FILE,
    PER_UTTERANCE_COLUMNS,
    PER_UTTERANCE_FILE,
    PLOT_FILE,
    WORD_BUCKET_BOUNDS,
    compute_cer,
    compute_detailed_wer_metrics,
    compute_wer,
    create_evaluation_report,
    evaluate_model,
)

__all__ = [
    "DEFAULT_TOP_N",
    "DURATION_BUCKET_BOUNDS",
    "METRICS_FILE",
    "PER_UTTERANCE_COLUMNS",
    "PER_UTTERANCE_FILE",
    "PLOT_FILE",
    "WORD_BUCKET_BOUNDS",
    "compute_cer",
    "compute_detailed_wer_metrics",
    "compute_wer",
    "create_evaluation_report",
    "evaluate_model",
]
