"""TensorRT FP16 engines from the exported ONNX graphs (needs an NVIDIA GPU and the tensorrt package).

Each graph gets one optimisation profile over its dynamic axes, by the axis names the ONNX export gave
them (``whisper_triton.build.onnx_export``):

- encoder: ``batch`` (requests the dynamic batcher groups) x ``windows`` (30-s windows per request); served
  by Triton's ``tensorrt_plan`` backend.
- cross_kv: ``batch`` is windows; decoder: ``batch`` is rows (windows x beams of the grouped requests) and
  ``windows`` the cross K/V's windows; the decoder
  also has ``steps`` (the prompt on the first call, then 1) and ``past`` (cached positions, 0 on the
  first call). Both run in-process in the decoding model (``whisper_triton.tensorrt_runtime``), which
  slices batches larger than the profile's maximum.

This machine has no GPU: the tests skip with the reason, and ``whisper-triton build --runtime tensorrt`` says
what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from whisper_triton.build.triton_config import ENCODER_MAX_WINDOWS
from whisper_triton.tensorrt_runtime import TensorRTEngine, TensorRTUnavailable, tensorrt_available

__all__ = [
    "TensorRTEngine",
    "TensorRTUnavailable",
    "create_tensorrt_engine",
    "profile_ranges",
    "profile_shapes",
]

logger = logging.getLogger(__name__)

# (min, opt, max) of each dynamic axis. The optimum is the common case; the maxima bound engine memory.
ENCODER_BATCH = (1, 4, 8)  # = ServingSettings.max_batch_size
ENCODER_WINDOWS = (1, 1, ENCODER_MAX_WINDOWS)  # 20 windows = the default 600-second request limit
DECODER_ROWS = (1, 8, 64)  # e.g. 8 requests x 1 window x beam 5 = 40 rows fits in one call
TEXT_POSITIONS = 448  # Whisper's decoder context (manifest.n_text_ctx); every released model has 448


def profile_ranges(graph: str, text_positions: int = TEXT_POSITIONS) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per dynamic axis name of ``graph`` ("encoder", "cross_kv" or "decoder")."""
    if graph == "encoder":
        return {"batch": ENCODER_BATCH, "windows": ENCODER_WINDOWS}
    if graph == "cross_kv":
        return {"batch": DECODER_ROWS}
    if graph == "decoder":
        # The first call feeds the whole prompt (up to the context) with nothing cached; later calls feed
        # one token over up to text_positions - 1 cached ones.
        return {
            "batch": DECODER_ROWS,
            "windows": DECODER_ROWS,  # the cross K/V: one per window, read by its beams' rows
            "steps": (1, 1, text_positions),
            "past": (0, 64, text_positions - 1),
        }
    raise ValueError(f"no TensorRT profile for graph {graph!r}; expected encoder, cross_kv or decoder")


def profile_shapes(onnx_path: Path, ranges: dict[str, tuple[int, int, int]]) -> dict[str, list[list[int]]]:
    """[min, opt, max] shapes of every graph input: fixed dims as exported, named dims from ``ranges``."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes = {}
    for tensor in graph.input:
        triple: list[list[int]] = [[], [], []]
        for dim in tensor.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                values = (dim.dim_value,) * 3
            elif dim.dim_param in ranges:
                values = ranges[dim.dim_param]
            else:
                raise ValueError(
                    f"{onnx_path}: input {tensor.name} has dynamic axis {dim.dim_param!r} with no range"
                )
            for column, value in zip(triple, values, strict=True):
                column.append(value)
        shapes[tensor.name] = triple
    return shapes


def create_tensorrt_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str = "fp16",
    workspace_gb: float = 4.0,
    ranges: dict[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Build and serialise an engine for ``onnx_path``; FP16 kernels where TensorRT finds them faster.

    ``ranges`` gives (min, opt, max) per dynamic axis name; by default ``profile_ranges`` of the graph
    the file is named after (encoder.onnx, cross_kv.onnx, decoder.onnx).
    """
    available, reason = tensorrt_available()
    if not available:
        raise TensorRTUnavailable(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"TensorRT precision must be fp16 or fp32, got {precision!r}")
    onnx_path = Path(onnx_path)
    shapes = profile_shapes(onnx_path, ranges if ranges is not None else profile_ranges(onnx_path.stem))
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
        name = network.get_input(index).name
        profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path}")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    logger.info("built TensorRT %s engine %s", precision, engine_path)
    return engine_path
