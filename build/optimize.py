"""ONNX Runtime graph optimisation, FP16 conversion and INT8 dynamic quantisation of exported graphs."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


def optimize_onnx_model(input_path: str | Path, output_path: str | Path, float16: bool = False) -> Path:
    """Fuse and fold ``input_path`` with ONNX Runtime's offline optimiser; optionally convert to FP16.

    The optimised graph is saved at the "extended" level: its fused ops (LayerNorm, GELU, attention
    pieces) run on every ONNX Runtime execution provider, unlike layout-specific "all"-level graphs.
    """
    import onnxruntime as ort

    input_path, output_path = Path(input_path), Path(output_path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(output_path)
    ort.InferenceSession(str(input_path), options, providers=["CPUExecutionProvider"])
    if float16:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Inputs and outputs stay float32 so that clients and the decoding loop are unchanged.
        model = convert_float_to_float16(onnx.load(str(output_path)), keep_io_types=True)
        onnx.save(model, str(output_path))
    logger.info("optimised %s -> %s", input_path.name, output_path)
    return output_path


def quantize_onnx_int8(input_path: str | Path, output_path: str | Path) -> Path:
    """Dynamic INT8 quantisation of the MatMul/Gemm weights (activations quantised per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(input_path),
        str(output_path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=[
            "MatMul",
            "Gemm",
        ],  # convolutions stay float: only 2 layers, precision-sensitive
        per_channel=True,
    )
    logger.info("quantised %s -> %s", Path(input_path).name, output_path)
    return Path(output_path)
