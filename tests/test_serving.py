"""A real tritonserver with the built tiny.en repository: accuracy against PyTorch, protocols, bad input."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPOSITORY
from whisper_triton import contract
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.options import DecodingOptions
from whisper_triton.paths import cache_dir


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
    # One clip per batch: the same transcripts (rows are independent), and on CPU a fifth less time for
    # beam search than batches of 16 (each step then reads the cross-attention keys of 16 windows).
    decoded = reference.transcribe_batch(corpus_audio, DecodingOptions(**options), batch_size=1)
    expected = [t.text for t in decoded]
    with ThreadPoolExecutor(4) as pool:  # concurrent requests: the batchers group them
        served = list(pool.map(lambda audio: infer(client, audio, options)[0], corpus_audio))
    return expected, served


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"beam_size": 5}], ids=["greedy", "beam5"])
def test_served_transcripts_equal_pytorch_reference(
    grpc_client, reference, corpus_entries, corpus_audio, options
):
    """Accuracy gate against the PyTorch reference with the same decoding: >= 95% identical transcripts,
    WER within 0.5 points. Measured 40/40 identical (max logit difference 4e-5), but ONNX Runtime and
    PyTorch each pick their float kernels by CPU (AVX2, AVX-512, AMX), so a near-tie between two tokens
    may fall differently on another machine: the bound is what holds on all of them."""
    from training.metrics import compute_wer

    expected, served = _agreement(grpc_client, reference, corpus_audio, options)
    identical = sum(a == b for a, b in zip(expected, served, strict=True)) / len(expected)
    truth = [entry["text"] for entry in corpus_entries]
    wer_served, wer_reference = compute_wer(served, truth), compute_wer(expected, truth)
    print(
        f"{options or 'greedy'}: identical {identical:.1%}, WER served {wer_served:.2%} reference {wer_reference:.2%}"
    )
    assert identical >= 0.95, [(a, b) for a, b in zip(expected, served, strict=True) if a != b]
    assert abs(wer_served - wer_reference) <= 0.005


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


def _silent_flac(seconds: float) -> bytes:
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * SAMPLE_RATE), np.float32), SAMPLE_RATE, format="FLAC")
    return buffer.getvalue()


SPEECH = np.sin(np.linspace(0, 3000, 16000)).astype(np.float32) * 0.1  # any valid second of audio

BAD_REQUESTS = {
    "empty audio": (dict(audio=np.zeros(0, np.float32)), "empty"),
    "empty bytes": (dict(audio_bytes=b""), "empty"),
    "NaN samples": (dict(audio=np.array([0.1, np.nan, 0.2] * 1000, np.float32)), "NaN"),
    "int16 scale as float": (dict(audio=SPEECH * 32767), r"\[-1, 1\]"),
    "huge samples": (dict(audio=np.full(16000, 1e30, np.float32)), r"\[-1, 1\]"),
    "wrong dtype": (dict(audio=np.zeros(16000, np.float64)), "FP32"),
    "wrong rank": (dict(audio=np.zeros((2, 8000), np.float32)), "shape"),
    "too long": (dict(audio=np.zeros(int(601 * SAMPLE_RATE), np.float32)), "maximum"),
    # 2 hours of silence in 360 KB: refused from the FLAC header, before decoding a sample.
    "too long upload": (dict(audio_bytes=_silent_flac(7200)), "7200.0 s, more than the maximum"),
    "undecodable bytes": (dict(audio_bytes=b"this is not audio at all"), "AUDIO_BYTES"),
    "ffconcat playlist": (
        dict(audio_bytes=b"ffconcat version 1.0\nfile tests/data/jfk.flac\n"),
        "cannot decode",
    ),
    "hls playlist": (
        dict(
            audio_bytes=b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.ts\n#EXT-X-ENDLIST\n"
        ),
        "cannot decode",
    ),
    "sdp session": (
        dict(
            audio_bytes=b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"
        ),
        "cannot decode",
    ),
    "both inputs": (dict(audio=SPEECH, audio_bytes=b"x"), "exactly one"),
    "no input": (dict(), "exactly one"),
    "unknown option": (dict(audio=SPEECH, options={"beams": 2}), "unknown option"),
    "string boolean": (dict(audio=SPEECH, options={"timestamps": "false"}), "true, false or null"),
    "beam too large": (dict(audio=SPEECH, options={"beam_size": 99}), "beam_size"),
    "top_k without sampling": (dict(audio=SPEECH, options={"top_k": 5}), "temperature > 0"),
    "prompt too long": (dict(audio=SPEECH, options={"initial_prompt": "word " * 400}), "at most 223"),
    "options too large": (dict(audio=SPEECH, options={"initial_prompt": "x" * 20000}), "OPTIONS is"),
    "language on English model": (dict(audio=SPEECH, options={"language": "de"}), "English-only"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_clear_errors_while_others_succeed(server, grpc_client, corpus_audio, case):
    """Every client mistake: its own error naming the problem, as INVALID_ARGUMENT (never INTERNAL, which
    clients retry), with no traceback or server path; concurrent good requests are answered."""
    from tritonclient.utils import InferenceServerException

    kwargs, message = BAD_REQUESTS[case]
    with ThreadPoolExecutor(3) as pool:
        good = [pool.submit(infer, grpc_client, corpus_audio[i]) for i in (2, 3)]
        bad = pool.submit(infer, grpc_client, **kwargs)
        with pytest.raises(InferenceServerException, match=message) as raised:
            bad.result()
        assert all(len(f.result()[0].split()) >= 3 for f in good)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT", raised.value
    assert "Traceback" not in str(raised.value) and "/whisper_triton/" not in str(raised.value)
    assert grpc_client.is_server_live() and grpc_client.is_model_ready(contract.ENSEMBLE_MODEL)


@pytest.mark.parametrize("case", ["empty audio", "too long upload", "unknown option", "int16 scale as float"])
def test_bad_requests_are_http_400(server, case):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    kwargs, message = BAD_REQUESTS[case]
    client = httpclient.InferenceServerClient(server.url_http)
    with pytest.raises(InferenceServerException, match=message) as raised:
        infer(client, protocol="http", **kwargs)
    assert raised.value.status() == "400", raised.value


INT8_GATE_CORPUS = cache_dir("int8-gate-corpus")


def _held_out() -> list[dict]:
    """The int8 gate's 400 held-out utterances (synthesised once into the user cache)."""
    from whisper_triton.corpus import read_manifest, synthesize_corpus

    return read_manifest(synthesize_corpus(INT8_GATE_CORPUS, num_utterances=400, seed=31))


def _in_process(repository: Path):
    from whisper_triton.onnx_runtime import repository_transcriber

    return repository_transcriber(repository)


SERVED_INT8_SAMPLE = 120  # held-out utterances also sent through the int8 server under load


@pytest.mark.slow
def test_int8_wer_within_half_a_point_of_fp32_and_served_int8_matches_in_process(built_repository):
    """INT8, on 400 held-out utterances (no int8 choice was made looking at them; 400 because on the
    40-utterance corpus one word is 0.24 points): WER at most 0.5 above fp32's in-process (and within 1.0
    either way).

    Served under load (concurrency 4) vs the same graphs one request at a time in-process, on 120 of
    them: not bit-identical by promise, because ONNX Runtime picks its int8 kernels by CPU (AVX2, AVX-512
    VNNI, AMX) and by batch rows, and a near-tie between two tokens can fall either way. What holds on
    every CPU: at least 95% identical transcripts and WER within 0.3 points (measured on an AMX machine:
    identical on 40/40 corpus utterances once the server and the tools shared one numpy)."""
    import tritonclient.grpc as grpcclient

    from tests.artifacts import built_repository as cached_build
    from tests.prefetch import prefetched
    from training.metrics import compute_wer
    from whisper_triton.audio import load_audio
    from whisper_triton.server.launcher import TritonServer

    repository, report = cached_build("tiny.en", "int8")  # build_model_repository, cached by content
    assert report.utterances and report.wer_vs_reference <= 0.10
    held_out = _held_out()
    audios = [load_audio(entry["audio_filepath"]) for entry in held_out]
    truth = [entry["text"] for entry in held_out]
    int8 = _in_process(repository)
    # Decoded ahead by the session's background worker when it runs (tests/prefetch.py), else here.
    alone = prefetched(repository, held_out) or [int8.transcribe(a).text for a in audios]

    sample = audios[:SERVED_INT8_SAMPLE]
    with TritonServer(repository) as int8_server:
        client = grpcclient.InferenceServerClient(int8_server.url_grpc)
        with ThreadPoolExecutor(4) as pool:
            served = list(pool.map(lambda audio: infer(client, audio)[0], sample))
    identical = sum(a == b for a, b in zip(served, alone, strict=False))
    wer_served = compute_wer(served, truth[: len(sample)])
    wer_alone = compute_wer(alone[: len(sample)], truth[: len(sample)])
    print(
        f"int8 served at concurrency 4 vs one at a time in-process: {identical}/{len(sample)} identical, "
        f"WER {wer_served:.2%} vs {wer_alone:.2%}"
    )
    assert identical >= 0.95 * len(sample), [(a, b) for a, b in zip(served, alone, strict=False) if a != b]
    assert abs(wer_served - wer_alone) <= 0.003

    fp32 = _in_process(built_repository)
    fp32_texts = prefetched(built_repository, held_out) or [fp32.transcribe(a).text for a in audios]
    wer_fp32 = compute_wer(fp32_texts, truth)
    wer_int8 = compute_wer(alone, truth)
    print(f"400 held-out utterances: WER fp32 {wer_fp32:.2%}, int8 {wer_int8:.2%}")
    # The target: int8 at most half a point worse than fp32. Which words flip differs by CPU (int8 kernels):
    # 12.55% vs 12.79% on an AMX machine, 12.26% vs 12.79% on an AVX-512 one, so better-than-fp32 is no
    # failure; an int8 model over a point away either way would still be suspect.
    assert wer_int8 - wer_fp32 <= 0.005
    assert abs(wer_int8 - wer_fp32) <= 0.01


def test_generated_configs_match_the_contract(server):
    """Every config.pbtxt parses as Triton's ModelConfig and declares exactly the contract's tensors."""
    from whisper_triton.build.triton_config import parse_config

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
    stream = parse_config(REPOSITORY / contract.STREAM_MODEL / "config.pbtxt")
    assert names(stream.input) == {(s.name, s.dims) for s in contract.stream_inputs()}
    assert names(stream.output) == {(s.name, s.dims) for s in contract.stream_outputs()}
    assert [t.optional for t in stream.input] == [s.optional for s in contract.stream_inputs()]
    batching = stream.sequence_batching
    assert (
        stream.max_batch_size > 0 and batching.HasField("oldest") and not stream.HasField("dynamic_batching")
    )
    controls = {(c.name, c.control[0].kind) for c in batching.control_input}
    kinds = type(batching).Control.Kind
    assert controls == {(name, kinds.Value(kind)) for name, kind in contract.stream_controls()}
    # Room above the cap: the model refuses streams past it, Triton must not park them in its backlog.
    assert batching.oldest.max_candidate_sequences > int(stream.parameters["max_streams"].string_value)
    assert stream.parameters["encoder_input"].string_value == contract.INPUT_FEATURES
    # The running server loaded the same configs.
    import tritonclient.grpc as grpcclient

    live = grpcclient.InferenceServerClient(server.url_grpc).get_model_config(contract.DECODER_MODEL).config
    assert live.max_batch_size == decoder.max_batch_size


def test_perf_analyzer_measures_the_live_server(server, grpc_client, corpus_entries, corpus_audio, tmp_path):
    """perf_analyzer (installed by make setup) drives the ensemble with corpus speech, as PCM and as
    encoded files, and reports numbers that agree with the server's own statistics."""
    import base64
    import struct
    import subprocess
    import sys

    from whisper_triton.client import perf_analyzer

    flac = Path(corpus_entries[0]["audio_filepath"]).read_bytes()
    clips = [*corpus_audio[:2], flac]
    data = json.loads(perf_analyzer.write_input_data(clips, tmp_path / "input.json").read_text())["data"]
    assert [entry[contract.AUDIO]["shape"] for entry in data[:2]] == [[len(a)] for a in clips[:2]]
    np.testing.assert_allclose(data[0][contract.AUDIO]["content"], clips[0], atol=1e-6)
    # BYTES as perf_analyzer's raw "b64" buffer: Triton's serialisation, a 4-byte length then the bytes.
    assert base64.b64decode(data[2][contract.AUDIO_BYTES]["b64"]) == struct.pack("<I", len(flac)) + flac

    def served() -> int:
        stats = grpc_client.get_inference_statistics(contract.ENSEMBLE_MODEL).model_stats[0]
        return stats.inference_stats.success.count

    before = served()
    # A fixed request count: a stability search over 2 shared cores may never converge (it failed in CI).
    seconds = [len(a) / SAMPLE_RATE for a in corpus_audio[:3]]
    results = perf_analyzer.measure(server.url_grpc, clips, concurrency=[1], request_count=6, seconds=seconds)
    assert [r.concurrency for r in results] == [1]
    result = results[0]
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms
    assert result.requests_per_s > 0 and result.server_compute_ms > 0
    assert result.audio_s_per_s == pytest.approx(result.requests_per_s * np.mean(seconds))
    assert served() - before >= 6  # every measured request really reached the server

    # The CLI sends files as they are (AUDIO_BYTES), as the client library does.
    files = [entry["audio_filepath"] for entry in corpus_entries[:2]]
    command = [str(Path(sys.executable).parent / "whisper-triton"), "perf", *files, "--url", server.url_grpc]
    cli = subprocess.run(
        [*command, "--concurrency", "1", "--request-count", "4"], capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert re.search(r"^\|\s+1 \|\s+\d+\.\d+ \|", cli.stdout, re.MULTILINE), cli.stdout


def test_generation_options_of_the_api_document_are_honoured(grpc_client, corpus_audio):
    """transformers' generate() spellings and sampling options, through the server."""
    audio = corpus_audio[4]
    sampled = {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "seed": 3}
    assert infer(grpc_client, audio, sampled) == infer(grpc_client, audio, sampled)  # seeded: reproducible
    assert infer(grpc_client, audio, {"num_beams": 3}) == infer(grpc_client, audio, {"beam_size": 3})
    full, _ = infer(grpc_client, audio)
    short, _ = infer(grpc_client, audio, {"max_length": 5})  # the 2-token prompt and 3 generated tokens
    assert short and len(short.split()) <= 3 < len(full.split())
    for options in ({"repetition_penalty": 1.2}, {"no_repeat_ngram_size": 3}):
        assert infer(grpc_client, audio, options)[0]
