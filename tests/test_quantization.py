"""The int8 graphs: which MatMuls are quantised, and that a request's result does not depend on its batch."""

from __future__ import annotations

import re

import numpy as np
import pytest


@pytest.fixture(scope="module")
def exported(exported_graphs):
    return exported_graphs  # tiny.en's graphs, exported once per content (tests/conftest.py)


def _ops(path) -> dict[str, str]:
    import onnx

    return {node.name: node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def _decoder_inputs(rows: int, rng) -> dict[str, np.ndarray]:
    layers, heads, head_dim, frames = 4, 6, 64, 1500
    past = rng.standard_normal((layers, rows, heads, 5, head_dim)).astype(np.float32)
    past[:, 1:] *= 5  # the other rows span a wider range than row 0
    return {
        "tokens": rng.integers(0, 50000, (rows, 1)),
        "self_k": past,
        "self_v": past,
        "cross_k": rng.standard_normal((layers, rows, heads, head_dim, frames)).astype(np.float32),
        "cross_v": rng.standard_normal((layers, rows, heads, frames, head_dim)).astype(np.float32),
    }


def test_int8_decoder_rows_do_not_depend_on_the_rest_of_the_batch(exported, tmp_path):
    """Weight-only int8 quantises each row's activations on its own: row 0's logits are the same alone
    and in a batch with wider-ranged rows (dynamic int8 moves them, which is why the decoder avoids it)."""
    from whisper_triton.build.optimize import (
        INT8_FLOAT_DECODER,
        quantize_onnx_int8,
        quantize_onnx_weights_int8,
    )
    from whisper_triton.onnx_runtime import session

    weight_only = quantize_onnx_weights_int8(exported.decoder, tmp_path / "w8.onnx", INT8_FLOAT_DECODER)
    dynamic = quantize_onnx_int8(exported.decoder, tmp_path / "dyn.onnx")
    ops = _ops(weight_only)
    assert list(ops.values()).count("MatMulNBits") == 29  # 33 weight MatMuls minus the 4 fc2
    assert all(op == "MatMul" for name, op in ops.items() if re.search(r"/fc2(_\d+)?/MatMul", name))

    feeds = _decoder_inputs(4, np.random.default_rng(0))
    row0 = {name: (value[:1] if name == "tokens" else value[:, :1]) for name, value in feeds.items()}

    def row0_difference(path) -> float:
        graph = session(path, threads=2)
        return float(np.abs(graph.run(None, feeds)[0][0] - graph.run(None, row0)[0][0]).max())

    assert row0_difference(weight_only) < 1e-3
    assert row0_difference(dynamic) > 1e-2  # the failure mode the weight-only decoder exists to avoid


def test_int8_encoder_keeps_the_outlier_matmuls_float(exported, tmp_path):
    from whisper_triton.build.optimize import INT8_FLOAT_ENCODER, quantize_onnx_int8

    ops = _ops(quantize_onnx_int8(exported.encoder, tmp_path / "encoder.onnx", INT8_FLOAT_ENCODER))
    float_matmuls = {name for name, op in ops.items() if op == "MatMul"}
    int8_matmuls = {name for name, op in ops.items() if op == "MatMulInteger"}
    projections = ["self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj", "self_attn/out_proj", "fc1"]
    for layer in range(4):
        assert f"/encoder/layers.{layer}/fc2/MatMul" in float_matmuls
        for projection in projections:
            name = f"/encoder/layers.{layer}/{projection}/MatMul"
            assert (name in float_matmuls) if layer == 0 else (f"{name}_quant" in int8_matmuls)
    assert len(int8_matmuls) == 3 * len(projections)


def test_a_keep_float_pattern_that_matches_nothing_is_an_error(exported, tmp_path):
    from whisper_triton.build.optimize import quantize_onnx_int8

    with pytest.raises(ValueError, match="matches"):
        quantize_onnx_int8(exported.encoder, tmp_path / "x.onnx", re.compile("/no_such_layer/"))
