"""Fine-tuning, evaluation and the model API of whisper-triton.

Names are imported lazily so that ``import training`` stays cheap (torch and transformers load only when
a model function is used).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "create_whisper_model_and_processor": "training.modeling",
    "ENHANCED_MODEL_OVERRIDES": "training.modeling",
    "ModelLoadError": "training.modeling",
    "WhisperModelConfig": "training.model_config",
    "ModelConfigError": "training.model_config",
    "convert_ctranslate2_to_transformers": "training.ctranslate2_convert",
    "transcribe_audio": "training.transcribe",
    "transcriber": "training.transcribe",
    "DecodingOptions": "whisper_triton.options",
    "augment_audio": "training.augmentation",
    "load_audio": "whisper_triton.audio",
    "preprocess_audio": "whisper_triton.audio",
    "extract_features": "whisper_triton.features",
    "compute_wer": "training.metrics",
    "compute_cer": "training.metrics",
    "compute_detailed_wer_metrics": "training.metrics",
    "evaluate_model": "training.metrics",
    "create_evaluation_report": "training.metrics",
    "SpeechTrainingArguments": "training.arguments",
    "TrainingArgumentsError": "training.arguments",
    "SpeechTrainer": "training.trainer",
    "DataConfig": "training.data",
    "AugmentationConfig": "training.data",
    "DataError": "training.utterances",
    "SpeechDataset": "training.data",
    "load_speech_dataset": "training.data",
    "create_librispeech_dataloaders": "training.data",
    "create_speech_dataloaders": "training.data",
    "create_data_collator": "training.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return __all__
