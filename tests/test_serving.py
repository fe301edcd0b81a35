"""A real tritonserver with the built tiny.en repository: accuracy against PyTorch, protocols, bad input."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from whisper_triton import contract
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.options import DecodingOptions

REPOSITORY = Path(__file__).resolve().parent.parent / ".cache" / "test-model-repository"


@pytest.fixture(scope="session")
def server():
    """tritonserver on free loopback ports, serving tiny.en built by python -m build (fp32, python runtime)."""
    from build.repository import build_model_repository
    from build.server import TritonServer

    result = build_model_repository("tiny.en", REPOSITORY)
    assert result.report.identical == result.report.utterances  # the build's own parity check
    with TritonServer(REPOSITORY, log_path=REPOSITORY / "server.log") as running:
        yield running


@pytest.fixture(scope="session")
def grpc_client(server):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.url_grpc)


@pytest.fixture(scope="session")
def reference(tiny_en):
    from training.torch_backend import torch_transcriber

    return torch_transcriber(*tiny_en)


def infer(client, audio=None, options=None, audio_bytes=None, protocol="grpc"):
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    inputs = []
    if audio is not None:
        tensor = module.InferInput(contract.AUDIO, list(audio.shape), _triton_type(audio))
        tensor.set_data_from_numpy(audio)
        inputs.append(tensor)
    if audio_bytes is not None:
        tensor = module.InferInput(contract.AUDIO_BYTES, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([audio_bytes], dtype=object))
        inputs.append(tensor)
    if options is not None:
        tensor = module.InferInput(contract.OPTIONS, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([json.dumps(options).encode()], dtype=object))
        inputs.append(tensor)
    result = client.infer(contract.ENSEMBLE_MODEL, inputs)
    text = result.as_numpy(contract.TEXT).reshape(-1)[0].decode()
    segments = json.loads(result.as_numpy(contract.SEGMENTS).reshape(-1)[0].decode())
    return text, segments


def _triton_type(array: np.ndarray) -> str:
    return {np.float32: "FP32", np.float64: "FP64", np.int16: "INT16"}[array.dtype.type]


def _agreement(client, reference, corpus_audio, options: dict):
    expected = [t.text for t in reference.transcribe_batch(corpus_audio, DecodingOptions(**options))]
    with ThreadPoolExecutor(4) as pool:  # concurrent requests: the batchers group them
        served = list(pool.map(lambda audio: infer(client, audio, options)[0], corpus_audio))
    return expected, served


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"beam_size": 5}], ids=["greedy", "beam5"])
def test_served_transcripts_equal_pytorch_reference(
    grpc_client, reference, corpus_entries, corpus_audio, options
):
    """Accuracy gate: >= 98% identical to the PyTorch reference with the same decoding, WER within 0.1."""
    from training.metrics import compute_wer

    expected, served = _agreement(grpc_client, reference, corpus_audio, options)
    identical = sum(a == b for a, b in zip(expected, served, strict=True)) / len(expected)
    truth = [entry["text"] for entry in corpus_entries]
    wer_served, wer_reference = compute_wer(served, truth), compute_wer(expected, truth)
    print(
        f"{options or 'greedy'}: identical {identical:.1%}, WER served {wer_served:.2%} reference {wer_reference:.2%}"
    )
    assert identical >= 0.98, [(a, b) for a, b in zip(expected, served, strict=True) if a != b]
    assert abs(wer_served - wer_reference) <= 0.001


def test_http_and_grpc_agree_and_timestamps_make_segments(server, grpc_client, corpus_audio):
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(server.url_http)
    audio = corpus_audio[0]
    grpc_text, _ = infer(grpc_client, audio)
    http_text, _ = infer(http, audio, protocol="http")
    assert grpc_text == http_text and len(grpc_text.split()) >= 4
    text, segments = infer(grpc_client, audio, {"timestamps": True})
    assert segments and all(0 <= s["start"] < s["end"] <= len(audio) / SAMPLE_RATE + 0.02 for s in segments)
    assert " ".join(s["text"] for s in segments) == text


def test_encoded_bytes_are_decoded_server_side(grpc_client, corpus_entries, corpus_audio):
    flac = Path(corpus_entries[1]["audio_filepath"]).read_bytes()
    assert infer(grpc_client, audio_bytes=flac)[0] == infer(grpc_client, corpus_audio[1])[0]


@pytest.mark.slow
def test_long_audio_is_windowed_with_segment_times(grpc_client, corpus_entries, corpus_audio):
    """2-4 minutes of speech: WER within 1.0 absolute of the short-utterance WER, ordered segments."""
    from training.metrics import compute_wer
    from whisper_triton.corpus import concatenate_utterances

    audio, reference_text = concatenate_utterances(corpus_entries)
    assert 120 <= len(audio) / SAMPLE_RATE <= 240
    text, segments = infer(grpc_client, audio.astype(np.float32), {"timestamps": True})
    with ThreadPoolExecutor(4) as pool:  # the same sentences one by one, with the same options
        short = list(pool.map(lambda clip: infer(grpc_client, clip, {"timestamps": True})[0], corpus_audio))
    long_wer = compute_wer(text, reference_text)
    short_wer = compute_wer(short, [entry["text"] for entry in corpus_entries])
    print(f"long-form WER {long_wer:.2%}, short-utterance WER {short_wer:.2%}, {len(segments)} segments")
    assert abs(long_wer - short_wer) <= 0.01
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and segments[-1]["end"] > 100


BAD_REQUESTS = {
    "empty audio": (dict(audio=np.zeros(0, np.float32)), "empty"),
    "NaN samples": (dict(audio=np.array([0.1, np.nan, 0.2] * 1000, np.float32)), "NaN"),
    "wrong dtype": (dict(audio=np.zeros(16000, np.float64)), "FP32"),
    "wrong rank": (dict(audio=np.zeros((2, 8000), np.float32)), "shape"),
    "too long": (dict(audio=np.zeros(int(601 * SAMPLE_RATE), np.float32)), "maximum"),
    "undecodable bytes": (dict(audio_bytes=b"this is not audio at all"), "AUDIO_BYTES"),
    "both inputs": (dict(audio=np.zeros(16000, np.float32), audio_bytes=b"x"), "exactly one"),
    "no input": (dict(), "exactly one"),
    "unknown option": (dict(audio=np.zeros(16000, np.float32), options={"beams": 2}), "unknown option"),
    "string boolean": (
        dict(audio=np.zeros(16000, np.float32), options={"timestamps": "false"}),
        "true or false",
    ),
    "beam too large": (dict(audio=np.zeros(16000, np.float32), options={"beam_size": 99}), "beam_size"),
    "language on English model": (
        dict(audio=np.zeros(16000, np.float32), options={"language": "de"}),
        "English-only",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_clear_errors_while_others_succeed(server, grpc_client, corpus_audio, case):
    from tritonclient.utils import InferenceServerException

    kwargs, message = BAD_REQUESTS[case]
    with ThreadPoolExecutor(3) as pool:
        good = [pool.submit(infer, grpc_client, corpus_audio[i]) for i in (2, 3)]
        bad = pool.submit(infer, grpc_client, **kwargs)
        with pytest.raises(InferenceServerException, match=message):
            bad.result()
        assert all(len(f.result()[0].split()) >= 3 for f in good)
    assert grpc_client.is_server_live() and grpc_client.is_model_ready(contract.ENSEMBLE_MODEL)


INT8_GATE_CORPUS = Path(__file__).resolve().parent.parent / ".cache" / "int8-gate-corpus"


def _in_process(repository: Path):
    from whisper_triton.manifest import TOKENIZER_FILE, ModelManifest
    from whisper_triton.onnx_runtime import OnnxDecoderBackend, OnnxEncoder
    from whisper_triton.tokenizer import TextTokenizer
    from whisper_triton.transcriber import Transcriber

    decoder = repository / contract.DECODER_MODEL / "1"
    manifest = ModelManifest.load(decoder)
    return Transcriber(
        OnnxEncoder(repository / contract.ENCODER_MODEL / "1"),
        OnnxDecoderBackend(decoder, manifest),
        manifest,
        TextTokenizer(decoder / TOKENIZER_FILE),
    )


@pytest.mark.slow
def test_int8_wer_within_half_a_point_of_fp32_and_served_int8_is_batch_independent(
    server, grpc_client, corpus_entries, corpus_audio, tmp_path_factory
):
    """INT8: the served transcripts under concurrent load equal the same graphs run one request at a
    time in-process (quantisation that does not depend on batching), and on 400 held-out utterances the
    int8 WER is within 0.5 absolute of fp32's. Held out: no int8 choice was made looking at them; and
    400, because on the 40-utterance test corpus one word is 0.24 points (measured 13.24% vs 13.31%)."""
    import tritonclient.grpc as grpcclient

    from build.repository import build_model_repository
    from build.server import TritonServer
    from training.metrics import compute_wer
    from whisper_triton.audio import load_audio
    from whisper_triton.corpus import read_manifest, synthesize_corpus

    repository = tmp_path_factory.mktemp("int8-repository")
    result = build_model_repository("tiny.en", repository, precision="int8")
    assert result.report.wer_vs_reference <= 0.10
    int8 = _in_process(repository)
    with TritonServer(repository) as int8_server:
        client = grpcclient.InferenceServerClient(int8_server.url_grpc)
        with ThreadPoolExecutor(4) as pool:
            served = list(pool.map(lambda audio: infer(client, audio)[0], corpus_audio))
    alone = [int8.transcribe(audio).text for audio in corpus_audio]
    identical = sum(a == b for a, b in zip(served, alone, strict=True))
    print(f"int8 served at concurrency 4 vs one at a time in-process: {identical}/{len(alone)} identical")
    assert identical >= 0.98 * len(alone)

    with ThreadPoolExecutor(4) as pool:
        served_fp32 = list(pool.map(lambda audio: infer(grpc_client, audio)[0], corpus_audio))
    truth = [entry["text"] for entry in corpus_entries]
    print(
        f"test corpus: WER fp32 {compute_wer(served_fp32, truth):.2%}, int8 {compute_wer(served, truth):.2%}"
    )

    held_out = read_manifest(synthesize_corpus(INT8_GATE_CORPUS, num_utterances=400, seed=31))
    audios = [load_audio(entry["audio_filepath"]) for entry in held_out]
    truth = [entry["text"] for entry in held_out]
    fp32 = _in_process(REPOSITORY)
    wer_fp32 = compute_wer([fp32.transcribe(a).text for a in audios], truth)
    wer_int8 = compute_wer([int8.transcribe(a).text for a in audios], truth)
    print(f"400 held-out utterances: WER fp32 {wer_fp32:.2%}, int8 {wer_int8:.2%}")
    assert abs(wer_int8 - wer_fp32) <= 0.005


def test_generated_configs_match_the_contract(server):
    """Every config.pbtxt parses as Triton's ModelConfig and declares exactly the contract's tensors."""
    from build.triton_config import parse_config

    def names(tensors):
        return {(t.name, tuple(t.dims)) for t in tensors}

    ensemble = parse_config(REPOSITORY / contract.ENSEMBLE_MODEL / "config.pbtxt")
    assert names(ensemble.input) == {(s.name, s.dims) for s in contract.ensemble_inputs()}
    assert names(ensemble.output) == {(s.name, s.dims) for s in contract.ensemble_outputs()}
    assert all(t.optional for t in ensemble.input)
    decoder = parse_config(REPOSITORY / contract.DECODER_MODEL / "config.pbtxt")
    assert decoder.max_batch_size > 0 and decoder.HasField("dynamic_batching")
    assert {t.name for t in decoder.output} == {contract.TEXT, contract.SEGMENTS}
    steps = [step.model_name for step in ensemble.ensemble_scheduling.step]
    assert steps == [contract.FEATURES_MODEL, contract.ENCODER_MODEL, contract.DECODER_MODEL]
    # The running server loaded the same configs.
    import tritonclient.grpc as grpcclient

    live = grpcclient.InferenceServerClient(server.url_grpc).get_model_config(contract.DECODER_MODEL).config
    assert live.max_batch_size == decoder.max_batch_size


def test_perf_analyzer_measures_the_live_server(server, grpc_client, corpus_audio, tmp_path):
    """perf_analyzer (installed by make setup) drives the ensemble with corpus speech and reports numbers
    that agree with the server's own statistics."""
    from client import perf_analyzer

    clips = corpus_audio[:3]
    data = json.loads(perf_analyzer.write_input_data(clips, tmp_path / "input.json").read_text())["data"]
    assert [entry[contract.AUDIO]["shape"] for entry in data] == [[len(a)] for a in clips]
    np.testing.assert_allclose(data[0][contract.AUDIO]["content"], clips[0], atol=1e-6)

    def served() -> int:
        stats = grpc_client.get_inference_statistics(contract.ENSEMBLE_MODEL).model_stats[0]
        return stats.inference_stats.success.count

    before = served()
    # A fixed request count: a stability search over 2 shared cores may never converge (it failed in CI).
    results = perf_analyzer.run(server.url_grpc, clips, concurrency=[1], request_count=6)
    assert [r.concurrency for r in results] == [1]
    result = results[0]
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms
    assert result.requests_per_s > 0 and result.server_compute_ms > 0
    mean_seconds = np.mean([len(a) for a in clips]) / SAMPLE_RATE
    assert result.audio_s_per_s == pytest.approx(result.requests_per_s * mean_seconds)
    assert served() - before >= 6  # every measured request really reached the server
