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
