"""The processor that ``create_whisper_model_and_processor`` returns: transformers' ``WhisperProcessor``
that also decodes label batches.

Training labels are padded with -100, the index transformers' losses ignore. transformers' tokenizer
cannot decode a negative id (``OverflowError``), so decoding a batch of labels, as the API document's
evaluation example does (``processor.batch_decode(batch["labels"], skip_special_tokens=True)``), would
fail. No token has a negative id, so dropping them before decoding changes nothing else.

The class keeps transformers' name: ``save_pretrained`` writes the class name into
``processor_config.json`` and ``tokenizer_config.json``, and a saved model must load with plain
transformers (``WhisperProcessor``/``AutoProcessor``) wherever it goes.
"""

from __future__ import annotations

from typing import Any

import transformers

__all__ = ["WhisperProcessor", "without_ignored_ids"]


def _as_list(ids: Any) -> Any:
    """Token ids as (nested) Python lists; tensors and arrays expose ``tolist``."""
    return ids.tolist() if hasattr(ids, "tolist") else ids


def _drop_negative(sequence: list) -> list:
    return [token for token in sequence if token >= 0]


def without_ignored_ids(ids: Any) -> Any:
    """``ids`` (one sequence or a batch) without negative ids such as the -100 of padded labels."""
    ids = _as_list(ids)
    if isinstance(ids, int):
        return ids
    if ids and not isinstance(_as_list(ids[0]), int):
        return [_drop_negative(_as_list(row)) for row in ids]
    return _drop_negative(ids)


class WhisperProcessor(transformers.WhisperProcessor):
    """transformers' ``WhisperProcessor`` whose ``decode``/``batch_decode`` skip ignored (-100) label ids."""

    def batch_decode(self, sequences, *args, **kwargs):
        return super().batch_decode(without_ignored_ids(sequences), *args, **kwargs)

    def decode(self, token_ids, *args, **kwargs):
        return super().decode(without_ignored_ids(token_ids), *args, **kwargs)
