"""The seed's optimisation API: quantise, prune, export, optimise, build engines, benchmark.

Each ``benchmark_*`` returns a dict with ``latency_ms`` (mean) plus ``p50_ms``, ``p90_ms`` and ``runs``,
timing the encoder on ``input_shape`` log-mel input (the part whose cost these tools change); whole-request
latency and throughput through the server are measured by ``scripts/bench_serving.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from whisper_triton.build.onnx_export import ExportedModel, export_onnx_models
from whisper_triton.build.optimize import optimize_onnx_model
from whisper_triton.build.tensorrt import create_tensorrt_engine

__all__ = [
    "apply_dynamic_quantization",
    "apply_pruning",
    "benchmark_model",
    "benchmark_onnx_model",
    "benchmark_tensorrt_engine",
    "create_tensorrt_engine",
    "export_to_onnx",
    "optimize_onnx_model",
]

PRUNING_METHODS = ("l1_unstructured", "random_unstructured", "ln_structured")


def apply_dynamic_quantization(model):
    """A copy of ``model`` whose Linear layers run in INT8 (PyTorch dynamic quantisation, CPU)."""
    import copy

    import torch

    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model).eval(), {torch.nn.Linear}, dtype=torch.qint8
    )
    return quantized


def apply_pruning(model, pruning_method: str = "l1_unstructured", amount: float = 0.2):
    """Prune ``amount`` of every Linear weight in place (made permanent); returns (model, sparsity)."""
    import torch
    from torch.nn.utils import prune

    if pruning_method not in PRUNING_METHODS:
        raise ValueError(f"pruning_method must be one of {PRUNING_METHODS}, got {pruning_method!r}")
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    total = zeros = 0
    # proj_out shares its weight with the token embedding: pruning it would prune the embedding too.
    tied = getattr(model, "proj_out", None)
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or module is tied:
            continue
        if pruning_method == "ln_structured":
            prune.ln_structured(module, "weight", amount=amount, n=2, dim=0)
        else:
            getattr(prune, pruning_method)(module, "weight", amount=amount)
        prune.remove(module, "weight")
        total += module.weight.numel()
        zeros += int((module.weight == 0).sum())
    return model, zeros / max(total, 1)


def export_to_onnx(
    model, output_path: str | Path, input_shape: tuple[int, int, int] = (1, 80, 3000)
) -> ExportedModel:
    """Export encoder, cross-K/V and KV-cache decoder graphs into the directory ``output_path``.

    ``input_shape`` (batch, n_mels, frames) is checked against the model: Whisper's encoder takes exactly
    ``2 * max_source_positions`` frames, and the batch dimension is dynamic in the exported graphs.
    """
    config = model.config
    _, n_mels, frames = input_shape
    if n_mels != config.num_mel_bins or frames != 2 * config.max_source_positions:
        raise ValueError(
            f"input_shape {tuple(input_shape)} does not fit this model: it takes "
            f"(batch, {config.num_mel_bins}, {2 * config.max_source_positions})"
        )
    return export_onnx_models(model, output_path)


def _timings(run: Callable[[], object], num_runs: int, warmup: int) -> dict:
    if num_runs < 1:
        raise ValueError(f"num_runs must be >= 1, got {num_runs}")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(num_runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "latency_ms": float(np.mean(times)),
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "runs": num_runs,
    }


def _features(input_shape) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(input_shape).astype(np.float32) * 0.5


def benchmark_model(model, input_shape=(1, 80, 3000), num_runs: int = 10, warmup: int = 2) -> dict:
    """PyTorch encoder latency on ``input_shape`` log-mel input."""
    import torch

    features = torch.from_numpy(_features(input_shape))
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.model.encoder

    def run():
        with torch.inference_mode():
            encoder(features)

    return _timings(run, num_runs, warmup)


def benchmark_onnx_model(
    onnx_path: str | Path, input_shape=(1, 80, 3000), num_runs: int = 10, warmup: int = 2
) -> dict:
    """ONNX Runtime latency of an exported encoder (``[B, n_mels, frames]`` or ``[B, windows, ...]`` input)."""
    from whisper_triton.onnx_runtime import session

    onnx_session = session(onnx_path)
    declared = onnx_session.get_inputs()[0]
    features = _features(input_shape)
    if len(declared.shape) == 4 and features.ndim == 3:
        features = features[:, None]  # our encoder graph takes [batch, windows, n_mels, frames]
    feed = {declared.name: features}
    return _timings(lambda: onnx_session.run(None, feed), num_runs, warmup)


def benchmark_tensorrt_engine(
    engine_path: str | Path, input_shape=(1, 1, 80, 3000), num_runs: int = 10, warmup: int = 2
) -> dict:
    """TensorRT engine latency (needs a CUDA GPU, tensorrt and torch with CUDA)."""
    import torch

    from whisper_triton.build.tensorrt import TensorRTEngine

    engine = TensorRTEngine(engine_path)
    engine.bind({engine.inputs[0]: torch.from_numpy(_features(input_shape)).cuda()})
    return _timings(engine.execute, num_runs, warmup)
