"""whisper_stream on a real tritonserver: committed text, interleaved streams, the stream cap and the idle
timeout (on a second server with a small cap, a short timeout and TLS), the stream CLI."""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPOSITORY
from whisper_triton import contract
from whisper_triton.client.api import WhisperClient
from whisper_triton.client.stream import file_chunks
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.corpus import concatenate_utterances
from whisper_triton.metrics import compute_wer

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "whisper-triton")
STREAM_SECONDS = 45.0  # long enough that the buffer is cut several times (at 10 s)


@pytest.fixture(scope="module")
def long_speech(corpus_entries):
    audio, text = concatenate_utterances(corpus_entries, max_seconds=STREAM_SECONDS)
    return audio.astype(np.float32), text


def test_committed_text_only_grows_and_the_final_text_matches_offline(server, long_speech):
    audio, truth = long_speech
    client = WhisperClient(server.url_grpc)
    events = list(client.stream(file_chunks(audio, 1.0), catch_up=False))
    final = events[-1]
    assert final.final and not any(event.final for event in events[:-1])
    assert len(events) == int(np.ceil(len(audio) / SAMPLE_RATE)) + 1  # one answer per chunk, then END
    # Nothing committed is ever changed: the server's own final transcript is exactly the committed
    # pieces of every answer, in order.
    assert final.text == " ".join(event.committed for event in events if event.committed)
    assert all(not event.committed or event.committed.split() for event in events)
    pieces = [s for event in events for s in event.segments if s["committed"]]
    assert [s["text"] for s in pieces] and " ".join(s["text"] for s in pieces) == final.text
    starts = [s["start"] for s in pieces]
    assert starts == sorted(starts), "committed pieces come in stream order"
    assert all(0 <= s["start"] <= s["end"] <= len(audio) / SAMPLE_RATE + 0.05 for s in pieces)
    assert pieces[-1]["end"] > STREAM_SECONDS - 10, "segment times are stream times, not buffer times"

    offline = client.transcribe(audio, {"timestamps": True}).text
    stream_wer, offline_wer = compute_wer(final.text, truth), compute_wer(offline, truth)
    print(
        f"WER stream {stream_wer:.2%}, offline {offline_wer:.2%}, stream vs offline {compute_wer(final.text, offline):.2%}"
    )
    assert compute_wer(final.text, offline) <= 0.15
    assert stream_wer <= offline_wer + 0.05


def test_two_interleaved_streams_do_not_mix(server, corpus_entries):
    first, first_text = concatenate_utterances(corpus_entries[:4])
    second, second_text = concatenate_utterances(corpus_entries[20:24])
    client = WhisperClient(server.url_grpc)
    finals: dict[str, str] = {}

    def run(name, audio):
        events = client.stream(file_chunks(audio.astype(np.float32), 1.0), catch_up=False)
        finals[name] = list(events)[-1].text

    threads = [threading.Thread(target=run, args=args) for args in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert compute_wer(finals["a"], first_text) <= 0.25 and compute_wer(finals["b"], second_text) <= 0.25
    assert compute_wer(finals["a"], second_text) >= 0.75 and compute_wer(finals["b"], first_text) >= 0.75


def test_bad_chunks_and_options_are_refused_clearly(server):
    from tritonclient.utils import InferenceServerException

    client = WhisperClient(server.url_grpc)
    second = np.zeros(SAMPLE_RATE, np.float32)
    with pytest.raises(InferenceServerException, match=r"\[-1, 1\]"):
        list(client.stream([second, second + 40.0], catch_up=False))
    with pytest.raises(InferenceServerException, match="at most 15 s per chunk"):
        list(client.stream([np.zeros(16 * SAMPLE_RATE, np.float32)], catch_up=False))
    with pytest.raises(InferenceServerException, match="timestamps"):
        list(client.stream([second], {"timestamps": False}))
    with pytest.raises(InferenceServerException, match="English-only"):
        list(client.stream([second], {"language": "de"}))
    # A chunk of a stream that was never started.
    import tritonclient.grpc as grpcclient

    answers: queue.Queue = queue.Queue()
    raw = grpcclient.InferenceServerClient(server.url_grpc)
    raw.start_stream(callback=lambda result, error: answers.put(error))
    raw.async_stream_infer(contract.STREAM_MODEL, [_chunk(grpcclient, second)], sequence_id=987654321)
    assert "START" in str(answers.get(timeout=60))
    raw.stop_stream()
    assert client.is_ready(contract.STREAM_MODEL)


def _chunk(grpcclient, audio):
    tensor = grpcclient.InferInput(contract.AUDIO, [1, audio.size], "FP32")
    tensor.set_data_from_numpy(audio[None])
    return tensor


IDLE_SECONDS = 2.0


@pytest.fixture(scope="module")
def small_server(server, tmp_path_factory):
    """The test repository with whisper_stream's config generated for 2 live streams and a 2-s idle
    timeout, served over TLS gRPC (a self-signed certificate for 127.0.0.1)."""
    from whisper_triton.build.triton_config import ServingSettings, model_configs, write_config
    from whisper_triton.manifest import ModelManifest
    from whisper_triton.server.launcher import TritonServer

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    root = tmp_path_factory.mktemp("small-server")
    repository = root / "repository"
    shutil.copytree(REPOSITORY, repository, ignore=shutil.ignore_patterns("server.log", "__pycache__"))
    settings = ServingSettings(max_streams=2, stream_idle_seconds=IDLE_SECONDS)
    manifest = ModelManifest.load(repository / contract.DECODER_MODEL / "1")
    write_config(model_configs(manifest, settings)[contract.STREAM_MODEL], repository / contract.STREAM_MODEL)
    key, cert = root / "key.pem", root / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
        ]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )
    tls = ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}"]
    models = [contract.STREAM_MODEL, contract.ENCODER_MODEL, contract.DECODER_MODEL]
    with TritonServer(
        repository,
        model_control_mode="explicit",
        load_models=models,
        extra_args=tls,
        log_path=root / "server.log",
    ) as running:
        yield running, cert


def _open_and_abandon(url, cert, sequence_id, chunk):
    """A stream that sends its first chunk, gets the answer, and is never ended (the client vanished)."""
    import tritonclient.grpc as grpcclient

    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url, ssl=True, root_certificates=str(cert))
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    client.async_stream_infer(
        contract.STREAM_MODEL, [_chunk(grpcclient, chunk)], sequence_id=sequence_id, sequence_start=True
    )
    result, error = answers.get(timeout=120)
    assert error is None, error
    return client, answers


def test_stream_cap_and_abandoned_streams_are_freed_after_the_idle_timeout(small_server, corpus_audio):
    from tritonclient.utils import InferenceServerException

    server, cert = small_server
    speech = corpus_audio[0][:SAMPLE_RATE].astype(np.float32)
    abandoned = [_open_and_abandon(server.url_grpc, cert, key, speech) for key in (11, 12)]
    client = WhisperClient(server.url_grpc, ssl=True, root_certificates=str(cert))
    with pytest.raises(InferenceServerException, match="at most 2 live streams"):
        list(client.stream([speech]))
    time.sleep(IDLE_SECONDS + 1.0)
    # Both abandoned streams were dropped by the model too: a new stream gets a slot.
    events = list(client.stream(file_chunks(corpus_audio[1].astype(np.float32), 1.0)))
    assert events[-1].final and len(events[-1].text.split()) >= 3
    assert "freed 2 stream(s) idle" in server.log_text()
    # ... and by Triton: the abandoned stream's next chunk is refused.
    import tritonclient.grpc as grpcclient

    raw, answers = abandoned[0]
    raw.async_stream_infer(contract.STREAM_MODEL, [_chunk(grpcclient, speech)], sequence_id=11)
    _, error = answers.get(timeout=60)
    assert error is not None and "START" in str(error)
    for raw, _ in abandoned:
        raw.stop_stream()


def test_stream_cli_over_tls(small_server, corpus_entries):
    server, cert = small_server
    command = [CLI, "stream", corpus_entries[2]["audio_filepath"], "--fast", "--url", server.url_grpc]
    result = subprocess.run(
        [*command, "--ssl", "--root-certificates", str(cert)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert compute_wer(result.stdout.strip(), corpus_entries[2]["text"]) <= 0.3
    untrusted = subprocess.run([*command, "--ssl"], capture_output=True, text=True, timeout=300)
    assert untrusted.returncode == 2 and "no ready" in untrusted.stderr


def _microphone_works() -> bool:
    try:
        import sounddevice

        sounddevice.query_devices(kind="input")
    except Exception:  # noqa: BLE001 - not installed, no PortAudio, or no input device
        return False
    return True


def test_microphone_without_sounddevice_or_device_is_one_clear_line(server):
    if _microphone_works():
        pytest.skip("this machine can record: the command would stream from its microphone")
    result = subprocess.run(
        [CLI, "stream", "--mic", "--url", server.url_grpc], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert any(word in lines[0] for word in ("sounddevice", "PortAudio", "input device"))
