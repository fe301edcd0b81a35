"""Checkpoint -> ONNX (-> int8 / TensorRT) -> verified -> a complete Triton model repository.

Layout written to ``output``:
    requirements.txt                 the third-party packages the models import (the `serve` extra)
    whisper/config.pbtxt             the ensemble clients call
    whisper_features/{config.pbtxt, 1/model.py, manifest.json, tokenizer.json, silero_vad.onnx}
    whisper_stream/{config.pbtxt, 1/model.py, manifest.json, tokenizer.json, silero_vad.onnx}
    whisper_encoder/{config.pbtxt, 1/model.py + encoder.onnx | 1/model.onnx | 1/model.plan}
    whisper_decoder/{config.pbtxt, 1/model.py, cross_kv.onnx + decoder.onnx | cross_kv.plan + decoder.plan,
                     manifest.json, tokenizer.json}
and next to every model.py: ``_whisper_triton_paths.py`` and a copy of the ``whisper_triton`` core
package. The repository names no path of the build host: move it anywhere (another machine, NVIDIA's
container) and it runs, with the code it was verified with.

``--runtime tensorrt`` builds its three engines from the exported graphs as they are, not from ONNX
Runtime's optimised ones: those contain ONNX Runtime's own fused ops (com.microsoft BiasGelu,
FusedMatMul) that TensorRT's parser does not know, and TensorRT fuses for itself.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from whisper_triton import contract
from whisper_triton.build import onnx_export
from whisper_triton.build.model_code import (
    PATHS_MODULE,
    SOURCE_REPOSITORY,
    copy_model_code,
    write_requirements,
)
from whisper_triton.build.optimize import (
    INT8_FLOAT_DECODER,
    INT8_FLOAT_ENCODER,
    PRECISIONS,
    optimize_onnx_model,
    quantize_onnx_int8,
    quantize_onnx_weights_int8,
)
from whisper_triton.build.triton_config import ServingSettings, model_configs, write_config
from whisper_triton.build.verify import VerificationReport, verify_onnx, verify_tensorrt
from whisper_triton.manifest import MANIFEST_FILE, TOKENIZER_FILE, manifest_from_model
from whisper_triton.onnx_runtime import CROSS_KV_FILE, DECODER_FILE, ENCODER_FILE
from whisper_triton.tensorrt_runtime import (
    CROSS_KV_ENGINE,
    DECODER_ENGINE,
    ENCODER_ENGINE,
    TensorRTUnavailable,
    tensorrt_available,
)
from whisper_triton.vad import MODEL_FILE as VAD_FILE
from whisper_triton.vad import package_model_path as vad_model_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    repository: Path
    report: VerificationReport


def build_model_repository(
    model_name_or_path: str = "tiny.en",
    output: str | Path = SOURCE_REPOSITORY,
    precision: str = "fp32",
    settings: ServingSettings | None = None,
    verify: bool = True,
) -> BuildResult:
    """Export, optimise, verify and lay out the Triton repository; returns where and what was checked."""
    from training.modeling import create_whisper_model_and_processor

    settings = settings or ServingSettings()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if settings.runtime == "tensorrt":
        if precision == "int8":
            raise ValueError("the TensorRT runtime builds FP16 engines: use --precision fp16 (or fp32)")
        available, reason = tensorrt_available()
        if not available:  # before minutes of export, not after
            raise TensorRTUnavailable(f"--runtime tensorrt cannot build engines here: {reason}")
    output = Path(output)
    model, processor = create_whisper_model_and_processor(model_name_or_path)
    manifest = manifest_from_model(model, processor, precision=precision, source=str(model_name_or_path))

    with tempfile.TemporaryDirectory(prefix="whisper-onnx-") as tmp:
        exported = onnx_export.export_onnx_models(model, Path(tmp) / "fp32")
        onnx_dir = Path(tmp) / "final"
        onnx_dir.mkdir()
        for path in (exported.encoder, exported.cross_kv, exported.decoder):
            target = onnx_dir / path.name
            if precision == "int8" and path == exported.encoder:
                quantize_onnx_int8(path, target, keep_float=INT8_FLOAT_ENCODER)
            elif precision == "int8":
                quantize_onnx_weights_int8(
                    path, target, keep_float=INT8_FLOAT_DECODER if path == exported.decoder else None
                )
            elif precision == "fp16" and settings.runtime != "tensorrt":
                optimize_onnx_model(path, target, float16=True)
            else:
                optimize_onnx_model(path, target)
        processor.tokenizer.backend_tokenizer.save(str(onnx_dir / TOKENIZER_FILE))
        manifest.save(onnx_dir)
        report = (
            verify_onnx(model, processor, onnx_dir, manifest, precision)
            if verify
            else VerificationReport.skipped()
        )
        if settings.runtime == "tensorrt":
            report = _build_engines(exported, onnx_dir, precision, model, processor, manifest, verify)
        _lay_out(onnx_dir, output, manifest, settings)
    logger.info("model repository ready in %s (%s, %s)", output, settings.runtime, precision)
    return BuildResult(output, report)


def _build_engines(exported, onnx_dir: Path, precision, model, processor, manifest, verify: bool):
    """encoder/cross_kv/decoder .plan next to the ONNX files, checked against PyTorch like the ONNX ones."""
    from whisper_triton.build.tensorrt import create_tensorrt_engine

    for source, engine in (
        (exported.encoder, ENCODER_ENGINE),
        (exported.cross_kv, CROSS_KV_ENGINE),
        (exported.decoder, DECODER_ENGINE),
    ):
        create_tensorrt_engine(source, onnx_dir / engine, precision=precision)
    if not verify:
        return VerificationReport.skipped()
    return verify_tensorrt(model, processor, onnx_dir, manifest, precision)


def _lay_out(onnx_dir: Path, output: Path, manifest, settings: ServingSettings) -> None:
    configs = model_configs(manifest, settings)
    for name, config in configs.items():
        write_config(config, output / name)
    write_requirements(output)
    (output / contract.ENSEMBLE_MODEL / "1").mkdir(exist_ok=True)  # Triton needs a version, even an empty one
    copy_model_code(contract.FEATURES_MODEL, output)
    copy_model_code(contract.DECODER_MODEL, output)
    copy_model_code(contract.STREAM_MODEL, output)
    # The feature and streaming models validate options against the model and find speech before any
    # decoding.
    for model in (contract.FEATURES_MODEL, contract.STREAM_MODEL):
        version = output / model / "1"
        for name in (MANIFEST_FILE, TOKENIZER_FILE):
            shutil.copy2(onnx_dir / name, version / name)
        shutil.copy2(vad_model_path(), version / VAD_FILE)
    decoder_version = output / contract.DECODER_MODEL / "1"
    graphs = (CROSS_KV_FILE, DECODER_FILE)
    engines = (CROSS_KV_ENGINE, DECODER_ENGINE)
    # The decoding model runs the engines when they are there: a rebuild for another runtime removes them.
    for stale in engines if settings.runtime != "tensorrt" else graphs:
        (decoder_version / stale).unlink(missing_ok=True)
    for name in (*(engines if settings.runtime == "tensorrt" else graphs), MANIFEST_FILE, TOKENIZER_FILE):
        shutil.copy2(onnx_dir / name, decoder_version / name)
    encoder_version = output / contract.ENCODER_MODEL / "1"
    encoder_version.mkdir(parents=True, exist_ok=True)
    # A rebuild for another runtime must not leave the previous runtime's encoder behind.
    for stale in ("model.onnx", "model.plan", ENCODER_FILE):
        (encoder_version / stale).unlink(missing_ok=True)
    if settings.runtime != "python" and output.resolve() != SOURCE_REPOSITORY.resolve():
        (encoder_version / "model.py").unlink(missing_ok=True)  # a backend model, not a Python one now
        (encoder_version / PATHS_MODULE).unlink(missing_ok=True)
        shutil.rmtree(encoder_version / "whisper_triton", ignore_errors=True)
    if settings.runtime == "python":
        copy_model_code(contract.ENCODER_MODEL, output)
        shutil.copy2(onnx_dir / ENCODER_FILE, encoder_version / ENCODER_FILE)
    elif settings.runtime == "onnxruntime":
        shutil.copy2(onnx_dir / ENCODER_FILE, encoder_version / "model.onnx")
    else:
        shutil.copy2(onnx_dir / ENCODER_ENGINE, encoder_version / "model.plan")
