"""TensorRT FP16 engines from the exported ONNX graphs (needs an NVIDIA GPU and the tensorrt package).

Each graph gets one optimisation profile over its dynamic axes, by the axis names the ONNX export gave
them (``whisper_triton.build.onnx_export``); which graph a file holds is read from its input names, which
ONNX Runtime's optimiser keeps, so any file name will do:

- encoder: ``batch`` (requests the dynamic batcher groups) x ``windows`` (30-s windows per request); served
  by Triton's ``tensorrt_plan`` backend.
- cross_kv: ``batch`` is windows; decoder: ``batch`` is rows (windows x beams of the grouped requests) and
  ``windows`` the cross K/V's windows; the decoder
  also has ``steps`` (the prompt on the first call, then 1) and ``past`` (cached positions, 0 on the
  first call). Both run in-process in the decoding model (``whisper_triton.tensorrt_runtime``), which
  slices batches larger than the profile's maximum.

A graph optimised by ONNX Runtime (``optimize_onnx_model``) holds fused ``com.microsoft`` ops that TensorRT's
parser does not know; TensorRT fuses on its own, so its engine is built from the exported graph the
optimised one records as its source (``tensorrt_source``).

This machine has no GPU: the tests skip with the reason, and ``whisper-triton build --runtime tensorrt`` says
what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from whisper_triton.build.optimize import OPTIMIZED_FROM_KEY
from whisper_triton.build.triton_config import ENCODER_MAX_WINDOWS
from whisper_triton.tensorrt_runtime import TensorRTEngine, TensorRTUnavailable, tensorrt_available

__all__ = [
    "TensorRTEngine",
    "TensorRTUnavailable",
    "create_tensorrt_engine",
    "graph_kind",
    "profile_ranges",
    "profile_shapes",
    "tensorrt_source",
]

logger = logging.getLogger(__name__)

# (min, opt, max) of each dynamic axis. The optimum is the common case; the maxima bound engine memory.
ENCODER_BATCH = (1, 4, 8)  # = ServingSettings.max_batch_size
ENCODER_WINDOWS = (1, 1, ENCODER_MAX_WINDOWS)  # 20 windows = the default 600-second request limit
DECODER_ROWS = (1, 8, 64)  # e.g. 8 requests x 1 window x beam 5 = 40 rows fits in one call
TEXT_POSITIONS = 448  # Whisper's decoder context (manifest.n_text_ctx); every released model has 448
# The first input of each exported graph names the graph (whisper_triton.build.onnx_export).
GRAPH_BY_FIRST_INPUT = {"input_features": "encoder", "encoder_output": "cross_kv", "tokens": "decoder"}
STANDARD_DOMAINS = ("", "ai.onnx")  # ONNX's own operators; TensorRT parses no vendor domain


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


def graph_kind(onnx_path: str | Path) -> str:
    """Which exported graph ``onnx_path`` holds ("encoder", "cross_kv" or "decoder"), by its first input."""
    import onnx

    inputs = [tensor.name for tensor in onnx.load(str(onnx_path), load_external_data=False).graph.input]
    kind = GRAPH_BY_FIRST_INPUT.get(inputs[0]) if inputs else None
    if kind is None:
        raise ValueError(
            f"no TensorRT profile for {onnx_path}: its inputs {inputs} are none of the exported graphs' "
            f"(first input {', '.join(GRAPH_BY_FIRST_INPUT)}); pass ranges={{axis name: (min, opt, max)}}"
        )
    return kind


def _vendor_ops(model) -> list[str]:
    return sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})


def tensorrt_source(onnx_path: str | Path) -> Path:
    """The graph TensorRT should parse for ``onnx_path``: itself, or, for a graph that ONNX Runtime
    optimised into its own fused ops, the exported graph it was optimised from."""
    import onnx

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    vendor = _vendor_ops(model)
    if not vendor:
        return onnx_path
    recorded = {prop.key: prop.value for prop in model.metadata_props}.get(OPTIMIZED_FROM_KEY)
    source = (onnx_path.parent / recorded).resolve() if recorded else None
    if source is None or not source.is_file() or source == onnx_path.resolve():
        where = f"its source {source} is gone" if recorded else "it records no source graph"
        raise ValueError(
            f"{onnx_path} holds ONNX Runtime ops TensorRT cannot parse ({', '.join(vendor)}) and {where}; "
            "build the engine from the graph export_to_onnx wrote"
        )
    if _vendor_ops(onnx.load(str(source), load_external_data=False)):
        raise ValueError(f"{source}, the source of {onnx_path}, holds ops TensorRT cannot parse too")
    logger.info(
        "%s holds ONNX Runtime's fused ops (%s); building from %s, the graph it was optimised from",
        onnx_path.name,
        ", ".join(vendor),
        source,
    )
    return source


def create_tensorrt_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str = "fp16",
    workspace_gb: float = 4.0,
    ranges: dict[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Build and serialise an engine for ``onnx_path``; FP16 kernels where TensorRT finds them faster.

    ``onnx_path`` is an exported graph, or one ``optimize_onnx_model`` made from it (the engine is then
    built from the exported one, ``tensorrt_source``). ``ranges`` gives (min, opt, max) per dynamic axis
    name; by default ``profile_ranges`` of the graph the file holds (``graph_kind``). Returns ``engine_path``.
    """
    available, reason = tensorrt_available()
    if not available:
        raise TensorRTUnavailable(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"TensorRT precision must be fp16 or fp32, got {precision!r}")
    onnx_path = tensorrt_source(onnx_path)
    shapes = profile_shapes(
        onnx_path, ranges if ranges is not None else profile_ranges(graph_kind(onnx_path))
    )
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
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    logger.info("built TensorRT %s engine %s", precision, engine_path)
    return engine_path
