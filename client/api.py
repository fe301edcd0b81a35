"""Client library: transcribe audio through the `whisper` ensemble over gRPC or HTTP (tritonclient), one
file or many at once, and transcribe live audio through the `whisper_stream` model over a gRPC stream."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_triton import contract
from whisper_triton.client.connection import Connection
from whisper_triton.client.stream import StreamEvent, run_stream
from whisper_triton.options import DecodingOptions

Audio = np.ndarray | str | Path | bytes


@dataclass
class Transcription:
    text: str
    segments: list[dict]  # {"start": s, "end": s, "text": str}


@dataclass
class BatchResult:
    """One input of :meth:`WhisperClient.transcribe_many`: its transcription, or the error that stopped it."""

    index: int  # position in the inputs
    input: Audio
    transcription: Transcription | None
    error: str | None  # None when it was transcribed
    seconds: float  # wall time of its request

    @property
    def ok(self) -> bool:
        return self.error is None


class WhisperClient:
    """``WhisperClient("localhost:8001")`` (gRPC) or ``WhisperClient("localhost:8000", protocol="http")``.

    TLS: ``ssl=True`` with ``root_certificates`` (the CA's PEM file), and for mutual TLS ``private_key`` and
    ``certificate_chain``; over HTTP, ``insecure=True`` skips the host-name check. Each thread that uses
    the client gets its own tritonclient connection (tritonclient's HTTP client must stay in its thread).
    """

    def __init__(
        self,
        url: str = "localhost:8001",
        protocol: str = "grpc",
        timeout_s: float = 300.0,
        **tls,
    ):
        self.connection = Connection(url, protocol, timeout_s, **tls)
        self._local = threading.local()

    @property
    def protocol(self) -> str:
        return self.connection.protocol

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.connection.client()
        return client

    def is_ready(self, model: str = contract.ENSEMBLE_MODEL) -> bool:
        try:
            return bool(self._client().is_model_ready(model))
        except Exception:  # noqa: BLE001 - unreachable or not ready both mean "not ready"
            return False

    def transcribe(self, audio: Audio, options: DecodingOptions | dict | None = None) -> Transcription:
        """Transcribe 16 kHz float32 PCM, an audio file path, or encoded file bytes.

        Files travel as they are (``AUDIO_BYTES``: a 10-minute FLAC is ~10 MB, its PCM 38 MB) and the
        server decodes them, so the client needs no audio decoder.
        """
        return _transcribe(self._client(), self.connection, audio, _options(options))

    def transcribe_many(
        self,
        inputs: Iterable[Audio],
        options: DecodingOptions | dict | None = None,
        concurrency: int = 4,
    ) -> list[BatchResult]:
        """Every input's :class:`BatchResult`, in input order; an input that fails has its ``error`` set
        (nothing is raised for it). At most ``concurrency`` requests are in flight."""
        results = list(self.iter_transcribe(inputs, options, concurrency))
        return sorted(results, key=lambda result: result.index)

    def iter_transcribe(
        self,
        inputs: Iterable[Audio],
        options: DecodingOptions | dict | None = None,
        concurrency: int = 4,
    ) -> Iterator[BatchResult]:
        """:class:`BatchResult` of each input as soon as it is done (completion order).

        ``concurrency`` worker threads, each with its own connection, take the next input when they are
        free: at most that many requests are in flight and inputs are read only when sent, so a list of
        10,000 files costs no more memory than ``concurrency`` of them. Closing the iterator early lets
        the requests in flight finish and sends no more.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        options = _options(options)
        source = enumerate(inputs)
        lock, stop = threading.Lock(), threading.Event()
        done: queue.Queue = queue.Queue()

        def work():
            client = None
            try:
                while not stop.is_set():
                    with lock:
                        item = next(source, None)
                    if item is None:
                        break
                    index, audio = item
                    started = time.perf_counter()
                    try:
                        client = client or self.connection.client()
                        transcription, error = _transcribe(client, self.connection, audio, options), None
                    except Exception as exc:  # noqa: BLE001 - reported per input; the batch goes on
                        transcription, error = None, _describe(exc)
                    done.put(BatchResult(index, audio, transcription, error, time.perf_counter() - started))
            finally:
                done.put(None)
                if client is not None:
                    client.close()

        workers = [threading.Thread(target=work, daemon=True) for _ in range(concurrency)]
        for worker in workers:
            worker.start()
        running = len(workers)
        try:
            while running:
                result = done.get()
                if result is None:
                    running -= 1
                else:
                    yield result
        finally:
            stop.set()

    def stream(
        self,
        chunks: Iterable[np.ndarray],
        options: DecodingOptions | dict | None = None,
        sequence_id: int | None = None,
        catch_up: bool = True,
    ) -> Iterator[StreamEvent]:
        """Transcribe live audio: ``chunks`` of 16 kHz float32 PCM (e.g. one second each, as they are
        recorded) go to `whisper_stream` over one gRPC bidirectional stream; yields one
        :class:`StreamEvent` per chunk as the server answers (``committed`` words never change;
        ``tentative`` is the current guess after them), the last with ``final`` set and the whole
        transcript in ``text``. Raises ``InferenceServerException`` when the server refuses a chunk (for
        example when it already serves its maximum of live streams).

        ``catch_up`` (for live sources): while a chunk is being decoded, the chunks recorded meanwhile
        wait and go together in the next request, so a busy server gets fewer, longer requests and the
        stream stays live. ``catch_up=False`` sends every chunk as its own request (to measure a fixed
        chunk size, or to replay a file as fast as the server answers)."""
        if self.protocol != "grpc":
            raise ValueError("streaming needs gRPC (a bidirectional stream): use protocol='grpc'")
        return run_stream(self.connection, chunks, _options(options), sequence_id, catch_up)

    def close(self) -> None:
        """Close this thread's connection (other threads' close with their thread)."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None


def _options(options: DecodingOptions | dict | None) -> DecodingOptions | None:
    # Bad options are refused here, before anything is sent.
    return DecodingOptions.from_dict(options) if isinstance(options, dict) else options


def _transcribe(
    client, connection: Connection, audio: Audio, options: DecodingOptions | None
) -> Transcription:
    module = connection.module
    if isinstance(audio, (str, Path)):
        audio = Path(audio).read_bytes()
    if isinstance(audio, (bytes, bytearray)):
        tensor = module.InferInput(contract.AUDIO_BYTES, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([bytes(audio)], dtype=object))
    else:
        pcm = np.ascontiguousarray(audio, dtype=np.float32)
        tensor = module.InferInput(contract.AUDIO, list(pcm.shape), "FP32")
        tensor.set_data_from_numpy(pcm)
    inputs = [tensor]
    if options is not None:
        tensor = module.InferInput(contract.OPTIONS, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([options.to_json().encode()], dtype=object))
        inputs.append(tensor)
    result = client.infer(contract.ENSEMBLE_MODEL, inputs, **connection.infer_kwargs())
    text = result.as_numpy(contract.TEXT).reshape(-1)[0].decode()
    segments = json.loads(result.as_numpy(contract.SEGMENTS).reshape(-1)[0].decode())
    return Transcription(text, segments)


def _describe(exc: Exception) -> str:
    """One line for a failed input: the server's own message, or the local error."""
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    if isinstance(exc, OSError) and exc.filename:
        message = f"{exc.strerror or exc}: {exc.filename}"
    return " ".join(str(message).split()) or type(exc).__name__
