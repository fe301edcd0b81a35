"""TensorRT: optimisation profiles, the decoder backend's batching logic, and the engines on a GPU.

The engines themselves need an NVIDIA GPU and the tensorrt package; those tests skip with the reason
here. What runs everywhere: the profile shapes read from the exported graphs, and the decoder backend
driven through the same calls with ONNX Runtime executing the graphs (small batch limits force the
slicing a full batch of beams needs), against the ONNX Runtime backend.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whisper_triton.build import api
from whisper_triton.options import DecodingOptions
from whisper_triton.tensorrt_runtime import TensorRTUnavailable, tensorrt_available

_TENSORRT, _TENSORRT_MISSING = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(not _TENSORRT, reason=f"TensorRT needs a GPU: {_TENSORRT_MISSING}")


@pytest.fixture(scope="module")
def exported(exported_graphs):
    return exported_graphs  # tiny.en's graphs, exported once per content (tests/conftest.py)


def test_profiles_cover_every_dynamic_axis_of_the_exported_graphs(exported):
    from whisper_triton.build.tensorrt import profile_ranges, profile_shapes

    encoder = profile_shapes(exported.encoder, profile_ranges("encoder"))
    assert encoder == {"input_features": [[1, 1, 80, 3000], [4, 1, 80, 3000], [8, 20, 80, 3000]]}
    assert profile_shapes(exported.cross_kv, profile_ranges("cross_kv")) == {
        "encoder_output": [[1, 1500, 384], [8, 1500, 384], [64, 1500, 384]]
    }
    decoder = profile_shapes(exported.decoder, profile_ranges("decoder"))
    assert decoder["tokens"] == [[1, 1], [8, 1], [64, 448]]
    # The first step has nothing cached (past = 0); the last one 447 positions.
    assert (
        decoder["self_k"] == decoder["self_v"] == [[4, 1, 6, 0, 64], [4, 8, 6, 64, 64], [4, 64, 6, 447, 64]]
    )
    assert decoder["cross_k"][2] == [4, 64, 6, 64, 1500] and decoder["cross_v"][2] == [4, 64, 6, 1500, 64]
    with pytest.raises(ValueError, match="no range"):
        profile_shapes(exported.decoder, profile_ranges("cross_kv"))  # "steps" and "past" have none
    with pytest.raises(ValueError, match="no TensorRT profile"):
        profile_ranges("model")


class _OnnxRuntimeGraph:
    """The engine calls TensorRTDecoderBackend makes (run, max_shape), executed by ONNX Runtime."""

    def __init__(self, path, max_rows: int):
        from whisper_triton.onnx_runtime import session

        self._session = session(path)
        self._max_rows = max_rows
        self.calls = 0

    def max_shape(self, name: str) -> tuple[int, ...]:
        return (self._max_rows, self._max_rows)  # axis 0 of tokens/encoder states, axis 1 of cross_k

    def run(self, inputs):
        self.calls += 1
        feed = {i.name: np.ascontiguousarray(inputs[i.name].numpy()) for i in self._session.get_inputs()}
        assert all(len(v) <= self._max_rows for k, v in feed.items() if k in ("tokens", "encoder_output"))
        assert all(v.shape[1] <= self._max_rows for k, v in feed.items() if k in ("cross_k", "cross_v"))
        outputs = self._session.run(None, feed)
        return {
            o.name: torch.from_numpy(v) for o, v in zip(self._session.get_outputs(), outputs, strict=True)
        }


def test_tensorrt_decoder_backend_slices_and_reorders_like_the_onnx_backend(exported, tiny_en, corpus_audio):
    """Greedy, beam 3, timestamps and 2-window audio: same transcripts and segments as OnnxDecoderBackend,
    with the batch cut into slices of whole windows (3 decoder rows, 2 cross K/V windows at most) because
    the 'engines' allow no more."""
    from training.torch_backend import torch_transcriber
    from whisper_triton.decoding import Decoder
    from whisper_triton.onnx_runtime import OnnxDecoderBackend, OnnxEncoder
    from whisper_triton.tensorrt_runtime import TensorRTDecoderBackend
    from whisper_triton.transcriber import Transcriber

    reference = torch_transcriber(*tiny_en)
    manifest, tokenizer, directory = reference.manifest, reference.decoder.tokenizer, exported.directory
    encoder = OnnxEncoder(directory)
    cross, decoder = _OnnxRuntimeGraph(exported.cross_kv, 2), _OnnxRuntimeGraph(exported.decoder, 3)
    sliced = TensorRTDecoderBackend(cross, decoder, manifest, torch.device("cpu"))
    ours = Transcriber(encoder, Decoder(sliced, manifest, tokenizer))
    onnx = Transcriber(encoder, Decoder(OnnxDecoderBackend(directory, manifest), manifest, tokenizer))
    audios = corpus_audio[:5]
    for options in (DecodingOptions(), DecodingOptions(beam_size=3), DecodingOptions(timestamps=True)):
        expected = onnx.transcribe_batch(audios, options)
        actual = ours.transcribe_batch(audios, options)
        assert [t.text for t in actual] == [t.text for t in expected], options
        assert [[s.to_dict() for s in t.segments] for t in actual] == [
            [s.to_dict() for s in t.segments] for t in expected
        ]
    assert decoder.calls > cross.calls > 1
    long_audio = np.concatenate(corpus_audio[:14])  # past 30 s: two windows
    assert len(long_audio) > 30 * 16000
    assert ours.transcribe(long_audio).text == onnx.transcribe(long_audio).text


def test_tensorrt_needs_a_gpu(tmp_path):
    if _TENSORRT:
        pytest.skip("TensorRT is available here: the engine build is exercised by the GPU tests")
    assert _TENSORRT_MISSING
    with pytest.raises(TensorRTUnavailable, match="cannot build"):
        api.create_tensorrt_engine(tmp_path / "encoder.onnx", tmp_path / "encoder.plan")
    with pytest.raises(TensorRTUnavailable):
        api.benchmark_tensorrt_engine(tmp_path / "encoder.plan")


def test_tensorrt_build_is_refused_for_int8_and_without_a_gpu(tmp_path):
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.build.triton_config import ServingSettings

    settings = ServingSettings(runtime="tensorrt")
    with pytest.raises(ValueError, match="FP16"):
        build_model_repository("tiny.en", tmp_path, "int8", settings)
    if not _TENSORRT:  # refused before the export, naming what is missing
        with pytest.raises(TensorRTUnavailable, match=_TENSORRT_MISSING.split(" (")[0]):
            build_model_repository("tiny.en", tmp_path, "fp16", settings)
        assert not any(tmp_path.iterdir())


@needs_tensorrt
def test_tensorrt_fp16_encoder_engine_matches_onnx(exported, corpus_audio, tmp_path):
    """The FP16 encoder engine, run on real speech, stays close to the float32 ONNX encoder."""
    from whisper_triton.features import transcription_features
    from whisper_triton.onnx_runtime import OnnxEncoder
    from whisper_triton.tensorrt_runtime import TensorRTEngine

    engine = TensorRTEngine(api.create_tensorrt_engine(exported.encoder, tmp_path / "encoder.plan"))
    features = transcription_features(corpus_audio[:2], 80)[None]  # [batch 1, 2 windows, mels, frames]
    expected = OnnxEncoder(exported.directory)(features)
    actual = engine(features)
    assert actual.shape == expected.shape
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 1e-2
    assert api.benchmark_tensorrt_engine(tmp_path / "encoder.plan", num_runs=2)["latency_ms"] > 0


@needs_tensorrt
def test_tensorrt_repository_transcribes_like_pytorch(tiny_en, corpus_entries, corpus_audio, tmp_path):
    """whisper-triton build --runtime tensorrt: three FP16 engines, verified in the build; on the test corpus the
    engines' greedy and beam transcripts equal PyTorch's on >= 95% of utterances."""
    from training.torch_backend import torch_transcriber
    from whisper_triton import contract
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.build.triton_config import ServingSettings
    from whisper_triton.decoding import Decoder
    from whisper_triton.tensorrt_runtime import TensorRTDecoderBackend, TensorRTEncoder
    from whisper_triton.transcriber import Transcriber

    result = build_model_repository("tiny.en", tmp_path, "fp16", ServingSettings(runtime="tensorrt"))
    assert result.report.identical == result.report.utterances
    decoder_dir = tmp_path / contract.DECODER_MODEL / "1"
    assert {p.name for p in decoder_dir.glob("*.plan")} == {"cross_kv.plan", "decoder.plan"}
    assert not list(decoder_dir.glob("*.onnx"))
    reference = torch_transcriber(*tiny_en)
    manifest = reference.manifest
    ours = Transcriber(
        TensorRTEncoder(tmp_path / contract.ENCODER_MODEL / "1" / "model.plan"),
        Decoder(
            TensorRTDecoderBackend.from_directory(decoder_dir, manifest),
            manifest,
            reference.decoder.tokenizer,
        ),
    )
    for options in (DecodingOptions(), DecodingOptions(beam_size=5)):
        expected = [t.text for t in reference.transcribe_batch(corpus_audio, options)]
        actual = [t.text for t in ours.transcribe_batch(corpus_audio, options)]
        same = sum(a == e for a, e in zip(actual, expected, strict=True))
        assert same >= 0.95 * len(corpus_entries), (options, same)
