"""Session fixtures shared by the test modules: the synthetic speech corpus and the tiny.en model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Kept between runs (gitignored): synthesis is deterministic and the corpus module reuses a complete
# corpus with the same parameters instead of synthesising it again.
CORPUS_DIR = Path(os.environ.get("WHISPER_TRITON_TEST_CORPUS", REPO_ROOT / ".cache" / "test-corpus"))
CORPUS_SIZE = 40  # enough utterances that 95% agreement means at most 2 differences
CORPUS_SEED = 0


def two_step_training_config(output_dir: Path, model: dict, **training) -> dict:
    """A `python -m training train` config: 2 steps on 4 corpus utterances, evaluation on 2.

    ``training`` overrides or adds training arguments (the learning rate, generation length, ...).
    """
    return {
        "model": model,
        "data": {
            "train_split": str(CORPUS_DIR),
            "eval_split": str(CORPUS_DIR),
            "max_train_samples": 4,
            "max_eval_samples": 2,
        },
        "training": {
            "output_dir": str(output_dir),
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "eval_steps": 2,
            "save_steps": 2,
            "logging_steps": 1,
            "report_to": ["none"],
            **training,
        },
    }


@pytest.fixture(scope="session")
def corpus_entries() -> list[dict]:
    """The test corpus: Piper and espeak-ng sentences in LibriSpeech layout, as manifest entries."""
    from whisper_triton.corpus import read_manifest, synthesize_corpus

    return read_manifest(synthesize_corpus(CORPUS_DIR, num_utterances=CORPUS_SIZE, seed=CORPUS_SEED))


@pytest.fixture(scope="session")
def corpus_audio(corpus_entries) -> list:
    from whisper_triton.audio import load_audio

    return [load_audio(entry["audio_filepath"]) for entry in corpus_entries]


@pytest.fixture(scope="session")
def tiny_en():
    """(model, processor) of the bundled tiny.en, loaded once per session."""
    from training.modeling import create_whisper_model_and_processor

    return create_whisper_model_and_processor("tiny.en")
