"""ONNX Runtime graph optimisation, FP16 conversion and INT8 quantisation (dynamic and weight-only) of exported graphs."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


# Metadata key of an optimised graph: the graph it was optimised from, relative to the optimised file's
# folder. ONNX Runtime's fused ops (com.microsoft) do not parse in TensorRT, which fuses on its own and so
# builds its engines from that source (``whisper_triton.build.tensorrt.tensorrt_source``).
OPTIMIZED_FROM_KEY = "whisper_triton.optimized_from"


def optimize_onnx_model(input_path: str | Path, output_path: str | Path, float16: bool = False) -> Path:
    """Fuse and fold ``input_path`` with ONNX Runtime's offline optimiser; optionally convert to FP16.

    The optimised graph is saved at the "extended" level: its fused ops (LayerNorm, GELU, attention
    pieces) run on every ONNX Runtime execution provider, unlike layout-specific "all"-level graphs.
    It keeps the input names and axis names of ``input_path`` and records where ``input_path`` is
    (metadata ``OPTIMIZED_FROM_KEY``). Returns ``output_path``.
    """
    import onnx
    import onnxruntime as ort

    input_path, output_path = Path(input_path), Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(output_path)
    ort.InferenceSession(str(input_path), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(output_path))
    if float16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Inputs and outputs stay float32 so that clients and the decoding loop are unchanged.
        model = convert_float_to_float16(model, keep_io_types=True)
    source = os.path.relpath(input_path.resolve(), output_path.resolve().parent)
    properties = {prop.key: prop.value for prop in model.metadata_props}
    onnx.helper.set_model_props(model, {**properties, OPTIMIZED_FROM_KEY: Path(source).as_posix()})
    onnx.save(model, str(output_path))
    logger.info("optimised %s -> %s", input_path.name, output_path)
    return output_path


# Which MatMuls stay float in --precision int8, chosen on calibration speech disjoint from the test corpus.
# The MLP down-projections ("fc2" in transformers' Whisper; the decoder's are fc2, fc2_1, ...): their
# input, the GELU output, has outliers 40-190x its RMS in tiny.en's encoder (the other MatMul inputs:
# 8-17x), so an int8 range spends its resolution on a few values. The encoder's first layer: after fc2,
# its value/output projections were the most sensitive. Relative error of the encoder output: all int8
# 0.095, fc2 float 0.054, fc2 and layer 0 float 0.024; the encoder is then 169 ms per window instead of
# 131 ms fully int8 and 211 ms float (2 threads). Names are the exporter's, from transformers' modules.
INT8_FLOAT_ENCODER = re.compile(r"/fc2(_\d+)?/|/layers\.0/")
INT8_FLOAT_DECODER = re.compile(r"/fc2(_\d+)?/")


def _matching_nodes(model, pattern: re.Pattern | None, path) -> list[str]:
    """Names of the nodes matching ``pattern``; an error when it matches none (a renamed export)."""
    if pattern is None:
        return []
    names = [node.name for node in model.graph.node if pattern.search(node.name)]
    if not names:
        raise ValueError(f"no node of {Path(path).name} matches {pattern.pattern!r}")
    return names


def quantize_onnx_int8(
    input_path: str | Path, output_path: str | Path, keep_float: re.Pattern | None = None
) -> Path:
    """Dynamic INT8: per-channel int8 weights, activations quantised with one range per call.

    Fast for the encoder's large GEMMs (1500 frames per window), but a call's activation range covers
    every row in it: run one window per call (``OnnxEncoder`` does) so results never depend on batching.
    MatMuls whose node name matches ``keep_float`` stay float.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = _matching_nodes(onnx.load(str(input_path), load_external_data=False), keep_float, input_path)
    quantize_dynamic(
        str(input_path),
        str(output_path),
        weight_type=QuantType.QInt8,
        # Convolutions stay float: only the encoder's 2 input layers, and precision-sensitive.
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        nodes_to_exclude=excluded,
    )
    logger.info("quantised %s -> %s (%d nodes kept float)", Path(input_path).name, output_path, len(excluded))
    return Path(output_path)


def quantize_onnx_weights_int8(
    input_path: str | Path,
    output_path: str | Path,
    keep_float: re.Pattern | None = None,
    block_size: int = 128,
) -> Path:
    """Weight-only INT8 (MatMulNBits, 8 bits, blocks of ``block_size`` along K, symmetric).

    For the decoder, which multiplies a few rows (one per beam/request) by its weights at each step: the
    op quantises each row's activations on its own (accuracy_level 4: int8 dot products), so a request's
    logits do not depend on what else is in the batch -- with dynamic quantisation they did (logits moved
    by 0.4 when other rows joined). As fast as dynamic INT8 here, and 4x smaller weights than float.
    MatMuls whose node name matches ``keep_float`` stay float.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    model = onnx.load(str(input_path))
    excluded = _matching_nodes(model, keep_float, input_path)
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,
        nodes_to_exclude=excluded,
        algo_config=config,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(output_path), use_external_data_format=False)
    logger.info("weight-only int8 %s -> %s", Path(input_path).name, output_path)
    return Path(output_path)
