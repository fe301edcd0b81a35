"""TensorRT FP16 engines from the exported ONNX graphs (needs an NVIDIA GPU and the tensorrt package).

The encoder engine gets an optimisation profile over batch x windows; it is served by Triton's
``tensorrt_plan`` backend in the official container. This machine has no GPU: the tests skip this with
the reason, and ``python -m build --runtime tensorrt`` says what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# (min, opt, max) of the encoder's dynamic axes: requests per batch and 30-second windows per request.
ENCODER_BATCH = (1, 4, 8)
ENCODER_WINDOWS = (1, 1, 20)  # 20 windows = the default 600-second request limit


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing here."""


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when engines can be built here, else (False, why not)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            False,
            "the tensorrt Python package is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)",
        )
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except ImportError:
        pass
    return True, ""


def create_tensorrt_engine(
    onnx_path: str | Path, engine_path: str | Path, precision: str = "fp16", workspace_gb: float = 4.0
) -> Path:
    """Build and serialise an engine for ``onnx_path``; FP16 kernels where TensorRT finds them faster."""
    available, reason = tensorrt_available()
    if not available:
        raise TensorRTUnavailable(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"TensorRT precision must be fp16 or fp32, got {precision!r}")
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        fixed = list(tensor.shape[2:])  # [batch, windows, n_mels, frames]: only the first two vary
        shapes = [[b, w, *fixed] for b, w in zip(ENCODER_BATCH, ENCODER_WINDOWS, strict=True)]
        profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path}")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    logger.info("built TensorRT %s engine %s", precision, engine_path)
    return engine_path
