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


class TensorRTEngine:
    """A deserialised engine with one input and one output, run on CUDA tensors from torch."""

    def __init__(self, engine_path: str | Path):
        available, reason = tensorrt_available()
        if not available:
            raise TensorRTUnavailable(f"cannot run a TensorRT engine: {reason}")
        import tensorrt as trt

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT cannot deserialise {engine_path}")
        self._context = self._engine.create_execution_context()
        self._input, self._output = self._engine.get_tensor_name(0), self._engine.get_tensor_name(1)

    def bind(self, features):
        """Set the input shape and addresses for the CUDA tensor ``features``; returns the output tensor."""
        import torch

        self._context.set_input_shape(self._input, tuple(features.shape))
        output = torch.empty(tuple(self._context.get_tensor_shape(self._output)), device=features.device)
        self._context.set_tensor_address(self._input, features.data_ptr())
        self._context.set_tensor_address(self._output, output.data_ptr())
        return output

    def execute(self, stream) -> None:
        self._context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()

    def __call__(self, features):
        """Output for ``features`` (numpy float32, the engine's input layout) as numpy."""
        import torch

        inputs = torch.from_numpy(features).cuda()
        output = self.bind(inputs)
        self.execute(torch.cuda.Stream())
        return output.float().cpu().numpy()
