"""The build's parity check: the exported graphs against the PyTorch model, on real speech.

For fp32 and fp16 the build fails unless greedy transcripts are identical to the PyTorch reference on
every verification utterance; for int8 it fails when the WER against the reference exceeds
``INT8_MAX_WER``. The max abs difference of decoder logits along the reference's greedy path is reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_triton.features import transcription_features
from whisper_triton.manifest import TOKENIZER_FILE, ModelManifest
from whisper_triton.paths import cache_dir

logger = logging.getLogger(__name__)

VERIFY_UTTERANCES = 4
INT8_MAX_WER = 0.10  # int8 may change a few words; more than 10% WER means a broken quantisation
VERIFY_CORPUS = cache_dir("build-verify")


class BuildVerificationError(RuntimeError):
    """The exported model does not reproduce the PyTorch model."""


@dataclass(frozen=True)
class VerificationReport:
    utterances: int
    identical: int
    max_logit_diff: float
    wer_vs_reference: float

    @classmethod
    def skipped(cls) -> VerificationReport:
        return cls(0, 0, float("nan"), float("nan"))

    def summary(self) -> str:
        if not self.utterances:
            return "verification skipped"
        return (
            f"{self.identical}/{self.utterances} transcripts identical to PyTorch, "
            f"max |logit diff| {self.max_logit_diff:.2e}, WER vs PyTorch {100 * self.wer_vs_reference:.2f}%"
        )


def verify_onnx(
    model, processor, onnx_dir: Path, manifest: ModelManifest, precision: str
) -> VerificationReport:
    """The ONNX graphs in ``onnx_dir``, run with ONNX Runtime, against the PyTorch model."""
    from whisper_triton.onnx_runtime import OnnxDecoderBackend, OnnxEncoder

    backend = OnnxDecoderBackend(onnx_dir, manifest)
    return _verify(
        model, processor, _transcriber(OnnxEncoder(onnx_dir), backend, manifest, onnx_dir), precision, "ONNX"
    )


def verify_tensorrt(
    model, processor, engine_dir: Path, manifest: ModelManifest, precision: str
) -> VerificationReport:
    """The TensorRT engines in ``engine_dir`` (encoder, cross_kv, decoder .plan) against the PyTorch model.

    FP16 engines are held to the same rule as fp16 ONNX: identical greedy transcripts.
    """
    from whisper_triton.tensorrt_runtime import ENCODER_ENGINE, TensorRTDecoderBackend, TensorRTEncoder

    backend = TensorRTDecoderBackend.from_directory(engine_dir, manifest)
    ours = _transcriber(TensorRTEncoder(engine_dir / ENCODER_ENGINE), backend, manifest, engine_dir)
    return _verify(model, processor, ours, precision, "TensorRT")


def _transcriber(encoder, backend, manifest: ModelManifest, directory: Path):
    """The in-process transcriber over an encoder and a decoder backend, with the tokenizer in
    ``directory``."""
    from whisper_triton.decoding import Decoder
    from whisper_triton.tokenizer import TextTokenizer
    from whisper_triton.transcriber import Transcriber

    decoder = Decoder(backend, manifest, TextTokenizer(directory / TOKENIZER_FILE))
    return Transcriber(encoder, decoder)


def _verify(model, processor, ours, precision: str, label: str) -> VerificationReport:
    """Transcripts and logits of the transcriber ``ours`` against the PyTorch model's."""
    from training.metrics import compute_wer
    from training.torch_backend import torch_transcriber
    from whisper_triton.audio import load_audio
    from whisper_triton.build.onnx_export import reference_logits
    from whisper_triton.corpus import read_manifest, synthesize_corpus

    entries = read_manifest(synthesize_corpus(VERIFY_CORPUS, num_utterances=VERIFY_UTTERANCES, seed=1234))
    audios = [load_audio(entry["audio_filepath"]) for entry in entries]
    encoder, backend, manifest = ours.encoder, ours.decoder.backend, ours.manifest
    reference = torch_transcriber(model, processor)
    expected = [t.text for t in reference.transcribe_batch(audios)]
    actual = [t.text for t in ours.transcribe_batch(audios)]

    # Logits along the reference's greedy path for the first utterance, all positions in one call.
    features = transcription_features(audios[:1], manifest.n_mels)
    prompt = [manifest.tokens.sot, manifest.tokens.no_timestamps]
    tokens = prompt + processor.tokenizer.encode(" " + expected[0], add_special_tokens=False)
    logits, _ = backend.step(
        np.asarray([tokens], dtype=np.int64), backend.new_cache(1), backend.cross_attention(encoder(features))
    )
    diff = float(np.abs(logits[0] - reference_logits(model, features[0], tokens)).max())

    report = VerificationReport(
        utterances=len(audios),
        identical=sum(a == e for a, e in zip(actual, expected, strict=True)),
        max_logit_diff=diff,
        wer_vs_reference=compute_wer(actual, expected) if any(expected) else 0.0,
    )
    logger.info("verification (%s %s): %s", label, precision, report.summary())
    if precision == "int8":
        if report.wer_vs_reference > INT8_MAX_WER:
            raise BuildVerificationError(f"int8 model is too far from PyTorch: {report.summary()}")
    elif report.identical != report.utterances:
        mismatches = [(e, a) for e, a in zip(expected, actual, strict=True) if e != a]
        raise BuildVerificationError(
            f"{label} transcripts differ from PyTorch ({report.summary()}): {mismatches}"
        )
    return report
