"""The seed's optimisation API, and the config generation for the other runtimes, on this CPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whisper_triton.build import api


def test_dynamic_quantization_keeps_transcripts_close(tiny_en, corpus_audio):
    from training.metrics import compute_wer
    from training.transcribe import transcribe_audio

    model, processor = tiny_en
    quantized = api.apply_dynamic_quantization(model)
    linear_types = {type(m).__name__ for m in quantized.modules() if "Linear" in type(m).__name__}
    assert any("Dynamic" in name or "Quantized" in name for name in linear_types) or "Linear" in str(
        linear_types
    )
    assert isinstance(model.model.decoder.layers[0].fc1, torch.nn.Linear)  # the original is untouched
    float_text = transcribe_audio(model, processor, corpus_audio[:4])
    int8_text = transcribe_audio(quantized, processor, corpus_audio[:4])
    assert compute_wer(int8_text, float_text) < 0.2


def test_pruning_reaches_the_requested_sparsity(tiny_en):
    from training.modeling import create_whisper_model_and_processor

    model, _ = create_whisper_model_and_processor("tiny.en")
    embedding = model.model.decoder.embed_tokens.weight.detach().clone()
    assert api.linear_sparsity(model) < 0.01  # trained weights are almost never exactly zero
    pruned = api.apply_pruning(model, "l1_unstructured", amount=0.3)
    assert pruned is model  # in place, and returned for the document's `pruned_model = apply_pruning(...)`
    assert api.linear_sparsity(pruned) == pytest.approx(0.3, abs=0.01)
    fc1 = pruned.model.encoder.layers[0].fc1.weight
    assert float((fc1 == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    assert torch.equal(pruned.model.decoder.embed_tokens.weight, embedding)  # tied output layer left alone
    with pytest.raises(ValueError, match="pruning_method"):
        api.apply_pruning(model, "magic")
    with pytest.raises(ValueError, match="amount"):
        api.apply_pruning(model, amount=1.5)


def test_export_optimize_and_benchmark(tmp_path, tiny_en):
    model, _ = tiny_en
    with pytest.raises(ValueError, match="does not fit"):
        api.export_to_onnx(model, tmp_path / "bad", input_shape=(1, 128, 3000))
    exported = api.export_to_onnx(model, tmp_path / "onnx", input_shape=(1, 80, 3000))
    optimized = api.optimize_onnx_model(exported.encoder, tmp_path / "encoder.opt.onnx")
    features = np.random.default_rng(0).standard_normal((1, 1, 80, 3000)).astype(np.float32)
    from whisper_triton.onnx_runtime import session

    original = session(exported.encoder).run(None, {"input_features": features})[0]
    fused = session(optimized).run(None, {"input_features": features})[0]
    np.testing.assert_allclose(fused, original, atol=1e-4)
    torch_result = api.benchmark_model(model, (1, 80, 3000), num_runs=2, warmup=1)  # the earlier names
    onnx_result = api.benchmark_onnx_model(optimized, (1, 80, 3000), num_iterations=2, warmup_iterations=1)
    for result in (torch_result, onnx_result):
        assert result["latency_ms"] > 0 and result["runs"] == 2 and result["p90_ms"] >= result["p50_ms"]
    assert torch_result["device"] == "cpu"
    with pytest.raises(TypeError, match="not both"):
        api.benchmark_onnx_model(optimized, num_iterations=3, num_runs=2)
    with pytest.raises(ValueError, match="num_iterations must be >= 1"):
        api.benchmark_model(model, num_iterations=0)


def test_onnx_file_export_feeds_optimisation_and_the_tensorrt_profile(tmp_path, tiny_en):
    """The document's chain: a .onnx path in, that path out; optimised under any name, the graph still
    says which TensorRT profile it needs and which exported graph TensorRT should parse."""
    from whisper_triton.build.tensorrt import graph_kind, profile_ranges, profile_shapes, tensorrt_source

    model, _ = tiny_en
    onnx_path = api.export_to_onnx(model, tmp_path / "models" / "model.onnx")
    assert onnx_path == tmp_path / "models" / "model.onnx" and onnx_path.is_file()
    optimized = api.optimize_onnx_model(
        input_path=onnx_path, output_path=tmp_path / "fast" / "model_opt.onnx"
    )
    assert optimized == tmp_path / "fast" / "model_opt.onnx"
    assert graph_kind(optimized) == graph_kind(onnx_path) == "encoder"
    assert profile_shapes(optimized, profile_ranges(graph_kind(optimized))) == {
        "input_features": [[1, 1, 80, 3000], [4, 1, 80, 3000], [8, 20, 80, 3000]]
    }
    # ONNX Runtime's fused GELU is no ONNX operator: TensorRT builds from the exported graph instead.
    assert tensorrt_source(optimized) == onnx_path.resolve()
    assert tensorrt_source(onnx_path) == onnx_path
    onnx_path.unlink()
    with pytest.raises(ValueError, match="TensorRT cannot parse .*Gelu.* its source .* is gone"):
        tensorrt_source(optimized)
    assert api.benchmark_onnx_model(optimized, num_iterations=1, warmup_iterations=0)["latency_ms"] > 0


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorrt"])
def test_configs_for_the_official_container_runtimes(tiny_en, runtime):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from whisper_triton import contract
    from whisper_triton.build.triton_config import ServingSettings, model_configs
    from whisper_triton.manifest import manifest_from_model

    configs = model_configs(manifest_from_model(*tiny_en), ServingSettings(runtime=runtime))
    encoder = configs[contract.ENCODER_MODEL]
    assert encoder.platform == {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}[runtime]
    assert [tuple(t.dims) for t in encoder.input] == [(-1, 80, 3000)]
    for config in configs.values():  # round trip through the text format Triton reads
        text = text_format.MessageToString(config)
        assert text_format.Parse(text, model_config_pb2.ModelConfig()) == config
    step = configs[contract.ENSEMBLE_MODEL].ensemble_scheduling.step[1]
    assert dict(step.input_map) == {"input_features": "features"}
    # The TensorRT decoding model runs its engines on the GPU Triton assigns to the instance.
    kind = configs[contract.DECODER_MODEL].instance_group[0].kind
    assert kind == (
        model_config_pb2.ModelInstanceGroup.KIND_GPU
        if runtime == "tensorrt"
        else model_config_pb2.ModelInstanceGroup.KIND_CPU
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nonexistent"], "unknown model '/nonexistent'"),
        (["--max-batch-size", "0"], "max_batch_size must be >= 1"),
        (["--decoder-instances", "0"], "decoder_instances must be >= 1"),
        (["--max-audio-seconds", "-1"], "max_audio_seconds must be above 0"),
        (["--runtime", "tensorrt", "--precision", "int8"], "FP16"),
    ],
)
def test_build_cli_reports_bad_input_without_a_traceback(tmp_path, args, message, capsys, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    command = ["build", "--output", str(tmp_path / "repo"), *args]
    if args == ["--model", "/nonexistent"]:  # the console script itself, once
        result = subprocess.run(
            [str(Path(sys.executable).parent / "whisper-triton"), *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    else:  # the same main(argv) in-process: no torch import per case
        from whisper_triton.cli import main

        monkeypatch.chdir(tmp_path)
        try:
            code = main(command)
        except SystemExit as exit:  # argparse's own refusals
            code = exit.code
        result = subprocess.CompletedProcess(command, code, *capsys.readouterr())
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "repo").exists()
