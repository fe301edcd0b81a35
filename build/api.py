"""The seed's optimisation API: quantise, prune, export, optimise, build engines, benchmark.

The names, parameters and return values are those of the project's API document (its "Model Optimization"
and "Optimization Example"): ``apply_pruning`` returns the pruned model (``linear_sparsity`` measures it),
``export_to_onnx`` returns the path it wrote, which ``optimize_onnx_model`` and ``create_tensorrt_engine``
take. Each ``benchmark_*`` takes ``num_iterations`` timed runs after ``warmup_iterations`` untimed ones and
returns a dict with ``latency_ms`` (mean) plus ``p50_ms``, ``p90_ms`` and ``runs``, timing the encoder on
``input_shape`` log-mel input (the part whose cost these tools change); whole-request latency and
throughput through the server are measured by ``scripts/bench_serving.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from whisper_triton.build.onnx_export import ExportedModel, export_encoder, export_onnx_models
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
    "linear_sparsity",
    "optimize_onnx_model",
]

PRUNING_METHODS = ("l1_unstructured", "random_unstructured", "ln_structured")


def apply_dynamic_quantization(model):
    """A copy of ``model`` whose Linear layers run in INT8 (PyTorch dynamic quantisation).

    PyTorch has dynamic INT8 kernels for CPUs only, so the copy is on the CPU whatever device ``model`` is on
    (``benchmark_model`` times it there).
    """
    import copy

    import torch

    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model).cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8
    )
    return quantized


def _prunable_linears(model):
    """The Linear layers that pruning touches: all but ``proj_out``, which shares its weight with the
    token embedding (pruning it would prune the embedding too)."""
    import torch

    tied = getattr(model, "proj_out", None)
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not tied]


def apply_pruning(model, pruning_method: str = "l1_unstructured", amount: float = 0.2):
    """Prune ``amount`` of every Linear weight of ``model`` in place (made permanent) and return the model.

    ``linear_sparsity(model)`` measures the share of zero weights afterwards.
    """
    from torch.nn.utils import prune

    if pruning_method not in PRUNING_METHODS:
        raise ValueError(f"pruning_method must be one of {PRUNING_METHODS}, got {pruning_method!r}")
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    for module in _prunable_linears(model):
        if pruning_method == "ln_structured":
            prune.ln_structured(module, "weight", amount=amount, n=2, dim=0)
        else:
            getattr(prune, pruning_method)(module, "weight", amount=amount)
        prune.remove(module, "weight")
    return model


def linear_sparsity(model) -> float:
    """The share of zero weights in the Linear layers that ``apply_pruning`` prunes."""
    weights = [module.weight for module in _prunable_linears(model)]
    total = sum(weight.numel() for weight in weights)
    zeros = sum(int((weight == 0).sum()) for weight in weights)
    return zeros / max(total, 1)


def export_to_onnx(
    model, output_path: str | Path, input_shape: tuple[int, int, int] = (1, 80, 3000)
) -> Path | ExportedModel:
    """Export ``model`` to ONNX (opset 17, float32) and return where it went.

    - ``output_path`` ending in ``.onnx``: the encoder graph, the part ``input_shape`` describes and the
      ``benchmark_*`` functions time, in that file; returns its path. Its input is
      ``input_features [batch, windows, n_mels, frames]``, as the server's encoder takes it.
    - any other ``output_path``: a folder with the three graphs the server runs (encoder, cross-K/V and
      the KV-cache decoder); returns their paths as an ``ExportedModel``.

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
    output_path = Path(output_path)
    if output_path.suffix == ".onnx":
        return export_encoder(model, output_path)
    return export_onnx_models(model, output_path)


DEFAULT_ITERATIONS = 10  # timed runs: enough for a stable mean of a ~100 ms encoder call
DEFAULT_WARMUP_ITERATIONS = 2  # untimed first runs (allocations, kernel selection, caches)


def _iterations(num_iterations: int, warmup_iterations: int, num_runs, warmup) -> tuple[int, int]:
    """(timed, warm-up) runs from the document's names, or from the earlier ``num_runs``/``warmup``."""
    if num_runs is not None:
        if num_iterations != DEFAULT_ITERATIONS:
            raise TypeError("give num_iterations or num_runs (its earlier name), not both")
        num_iterations = num_runs
    if warmup is not None:
        if warmup_iterations != DEFAULT_WARMUP_ITERATIONS:
            raise TypeError("give warmup_iterations or warmup (its earlier name), not both")
        warmup_iterations = warmup
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    if warmup_iterations < 0:
        raise ValueError(f"warmup_iterations must be >= 0, got {warmup_iterations}")
    return num_iterations, warmup_iterations


def _timings(run: Callable[[], object], num_iterations: int, warmup_iterations: int) -> dict:
    for _ in range(warmup_iterations):
        run()
    times = []
    for _ in range(num_iterations):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "latency_ms": float(np.mean(times)),
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "runs": num_iterations,
    }


def _features(input_shape) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(input_shape).astype(np.float32) * 0.5


def _is_dynamically_quantized(model) -> bool:
    import torch

    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def _benchmark_device(model, device):
    """Where ``benchmark_model`` runs: ``device`` (the model's own when None), the CPU for INT8 models."""
    import torch

    if _is_dynamically_quantized(model):
        return torch.device("cpu")  # PyTorch's dynamic INT8 kernels exist for CPUs only
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


def benchmark_model(
    model,
    input_shape=(1, 80, 3000),
    device=None,
    num_iterations: int = DEFAULT_ITERATIONS,
    warmup_iterations: int = DEFAULT_WARMUP_ITERATIONS,
    *,
    num_runs: int | None = None,
    warmup: int | None = None,
) -> dict:
    """PyTorch encoder latency on ``input_shape`` log-mel input, on ``device``.

    ``device`` (default: where the model is) receives the model (moved in place, as ``Module.to`` does)
    and the input; a dynamically quantised model runs on the CPU, the only device with its kernels. The
    result also says the ``device`` used. ``num_runs``/``warmup`` are earlier names of the iteration counts.
    """
    import torch

    num_iterations, warmup_iterations = _iterations(num_iterations, warmup_iterations, num_runs, warmup)
    target = _benchmark_device(model, device)
    model.to(target)
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.model.encoder
    dtype = next(encoder.parameters()).dtype  # a float16 model takes float16 features
    features = torch.from_numpy(_features(input_shape)).to(device=target, dtype=dtype)

    def run():
        with torch.inference_mode():
            encoder(features)
        if target.type == "cuda":
            torch.cuda.synchronize(target)  # CUDA calls return before the GPU is done

    return {**_timings(run, num_iterations, warmup_iterations), "device": str(target)}


def benchmark_onnx_model(
    onnx_path: str | Path,
    input_shape=(1, 80, 3000),
    num_iterations: int = DEFAULT_ITERATIONS,
    warmup_iterations: int = DEFAULT_WARMUP_ITERATIONS,
    *,
    num_runs: int | None = None,
    warmup: int | None = None,
) -> dict:
    """ONNX Runtime (CPU) latency of an exported encoder (``[B, n_mels, frames]`` or ``[B, windows, ...]`` input)."""
    from whisper_triton.onnx_runtime import session

    num_iterations, warmup_iterations = _iterations(num_iterations, warmup_iterations, num_runs, warmup)
    onnx_session = session(onnx_path)
    declared = onnx_session.get_inputs()[0]
    feed = {declared.name: _with_rank(_features(input_shape), len(declared.shape))}
    return _timings(lambda: onnx_session.run(None, feed), num_iterations, warmup_iterations)


def _with_rank(features, rank: int):
    """``[B, n_mels, frames]`` features as ``[B, 1 window, n_mels, frames]`` for a 4-D encoder input."""
    if rank == 4 and features.ndim == 3:
        return features[:, None]
    return features


def benchmark_tensorrt_engine(
    engine_path: str | Path,
    input_shape=(1, 80, 3000),
    num_iterations: int = DEFAULT_ITERATIONS,
    warmup_iterations: int = DEFAULT_WARMUP_ITERATIONS,
    *,
    num_runs: int | None = None,
    warmup: int | None = None,
) -> dict:
    """TensorRT engine latency (needs a CUDA GPU, tensorrt and torch with CUDA); input as for the ONNX one."""
    import torch

    from whisper_triton.build.tensorrt import TensorRTEngine

    num_iterations, warmup_iterations = _iterations(num_iterations, warmup_iterations, num_runs, warmup)
    engine = TensorRTEngine(engine_path)
    name = engine.inputs[0]
    features = _with_rank(_features(input_shape), len(engine.max_shape(name)))
    engine.bind({name: torch.from_numpy(np.ascontiguousarray(features)).to(engine.device)})

    def run():
        engine.execute()
        torch.cuda.synchronize(engine.device)  # execute() only enqueues the work

    return _timings(run, num_iterations, warmup_iterations)
