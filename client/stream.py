"""Live transcription over one gRPC bidirectional stream to the `whisper_stream` model.

Protocol (whisper_triton/contract.py): every chunk is one request with the stream's sequence id, the first
flagged ``sequence_start`` and carrying the options; after the last chunk an empty request flagged
``sequence_end`` asks for the final transcript. (The END flag cannot ride on the last chunk itself
without holding every chunk back until the next one shows whether it was the last, which would delay
live audio by a chunk.) Each request gets one response, in order.

Chunks are sent from a thread of their own as the iterable produces them (a microphone, a file paced at
real time), while the caller's thread reads the answers.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from whisper_triton import contract
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.options import DecodingOptions

DEFAULT_CHUNK_SECONDS = 1.0  # what scripts/bench_streaming.py measured as the best latency/cost balance
ABANDON_WAIT_S = 2.0  # how long a failed or closed stream waits to end its sequence on the server
MAX_REQUEST_SECONDS = contract.MAX_STREAM_CHUNK_SECONDS  # the server refuses longer chunks


@dataclass
class StreamEvent:
    """The server's answer to one chunk."""

    committed: str  # words committed by this chunk: final, never changed ("" if none)
    tentative: str  # the current guess after all committed words (each event replaces the last)
    segments: list[dict]  # {"start", "end", "text", "committed"} of this event's pieces, stream seconds
    final: bool  # the answer to the end of the stream
    text: str  # every word committed so far (on the final event: the server's whole transcript)
    audio_seconds: float  # audio sent up to and including this event's chunk
    latency_s: float = 0.0  # wall time from sending the chunk to this answer


class _Sender(threading.Thread):
    """Sends the chunks, then the END request; remembers when each request left and how much audio had
    been sent by then.

    A reader thread takes the chunks from their source as they come (a microphone, a paced file). With
    ``catch_up``, one request is in flight at a time and the chunks that arrive meanwhile travel together
    in the next request (up to ``MAX_REQUEST_SECONDS``): a server that falls behind gets fewer, longer
    requests instead of a growing queue, so a live stream stays live. Without it every chunk is one
    request, sent at once (Triton still hands a stream's requests to the model one after the other).
    """

    def __init__(self, client, chunks, options, sequence_id, catch_up):
        super().__init__(daemon=True)
        self.client, self.chunks, self.options, self.sequence_id = client, chunks, options, sequence_id
        self.catch_up = catch_up
        self.sent: dict[str, tuple[float, float]] = {}  # request id -> (audio seconds, send time)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.total: int | None = None  # requests sent, once the END request is out
        self.ready = threading.Condition()
        self.pending: list[np.ndarray] = []  # chunks read, not sent yet
        self.exhausted = False
        self.in_flight = 0

    def close(self) -> None:
        self.stop.set()
        with self.ready:
            self.ready.notify_all()

    def answered(self) -> None:
        with self.ready:
            self.in_flight -= 1
            self.ready.notify_all()

    def _read(self) -> None:
        try:
            for chunk in self.chunks:
                pcm = np.ascontiguousarray(np.asarray(chunk, dtype=np.float32).reshape(-1))
                with self.ready:
                    self.pending.append(pcm)
                    self.ready.notify_all()
                if self.stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            self.error = exc
        finally:
            with self.ready:
                self.exhausted = True
                self.ready.notify_all()

    def _next_request(self) -> np.ndarray | None:
        """The audio of the next request (None: send END), once it may go."""
        with self.ready:
            while not self.stop.is_set() and self.error is None:
                may_send = not self.catch_up or self.in_flight == 0
                if self.pending and may_send:
                    if not self.catch_up:
                        return self.pending.pop(0)
                    audio = np.concatenate(self.pending)
                    limit = round(MAX_REQUEST_SECONDS * SAMPLE_RATE)
                    self.pending = [audio[limit:]] if audio.size > limit else []
                    return audio[:limit]
                if self.exhausted and not self.pending and may_send:
                    return None
                self.ready.wait()
        raise _Stopped

    def run(self):
        import tritonclient.grpc as grpcclient

        threading.Thread(target=self._read, daemon=True).start()
        samples, count = 0, 0
        try:
            while True:
                audio = self._next_request()
                if audio is None:
                    self._send(grpcclient, np.zeros(0, np.float32), count, samples, end=True)
                    self.total = count + 1
                    return
                samples += audio.size
                self._send(grpcclient, audio, count, samples, end=False)
                count += 1
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            self.error = exc

    def _send(self, grpcclient, pcm, count, samples, end):
        audio = grpcclient.InferInput(contract.AUDIO, [1, pcm.size], "FP32")
        audio.set_data_from_numpy(pcm[None])
        inputs = [audio]
        if count == 0 and self.options is not None:
            tensor = grpcclient.InferInput(contract.OPTIONS, [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[self.options.to_json().encode()]], dtype=object))
            inputs.append(tensor)
        self.sent[str(count)] = (samples / SAMPLE_RATE, time.perf_counter())
        with self.ready:
            self.in_flight += 1
        self.client.async_stream_infer(
            contract.STREAM_MODEL,
            inputs,
            request_id=str(count),
            sequence_id=self.sequence_id,
            sequence_start=count == 0,
            sequence_end=end,
        )


class _Stopped(Exception):
    """The stream was closed while the sender waited."""


def run_stream(
    connection,
    chunks: Iterable[np.ndarray],
    options: DecodingOptions | None,
    sequence_id: int | None,
    catch_up: bool = True,
) -> Iterator[StreamEvent]:
    """The events of one stream (see ``WhisperClient.stream``)."""
    # A client of its own: tritonclient allows one stream per client.
    client = connection.client()
    answers: queue.Queue = queue.Queue()
    # A random 63-bit id: another client's stream will not have it (Triton's ids are per server).
    sequence_id = sequence_id if sequence_id is not None else secrets.randbits(63) or 1
    sender = _Sender(client, iter(chunks), options, sequence_id, catch_up)

    def answer(result, error):
        answers.put((result, error))
        sender.answered()

    client.start_stream(callback=answer)
    sender.start()
    committed: list[str] = []
    received = 0
    finished = False
    try:
        while sender.total is None or received < sender.total:
            try:
                result, error = answers.get(timeout=0.1)
            except queue.Empty:
                if sender.error is not None:
                    raise sender.error from None
                if not sender.is_alive() and sender.total is None:
                    return  # the chunks ended without an END request: nothing more will come
                continue
            received += 1
            if error is not None:
                raise error
            event = _event(result, sender, committed)
            finished = event.final
            yield event
    finally:
        sender.close()
        if not finished:
            _abandon(client, sender, sequence_id, answers)
        client.stop_stream(cancel_requests=not finished)
        client.close()


def _event(result, sender: _Sender, committed: list[str]) -> StreamEvent:
    def text(name):
        return result.as_numpy(name).reshape(-1)[0].decode()

    request_id = result.get_response().id
    audio_seconds, sent_at = sender.sent.get(request_id, (0.0, time.perf_counter()))
    new = text(contract.COMMITTED)
    if new:
        committed.append(new)
    final = sender.total is not None and request_id == str(sender.total - 1)
    return StreamEvent(
        committed=new,
        tentative=text(contract.TENTATIVE),
        segments=json.loads(text(contract.SEGMENTS)),
        final=final,
        text=text(contract.TEXT) if final else " ".join(committed),
        audio_seconds=audio_seconds,
        latency_s=time.perf_counter() - sent_at,
    )


def _abandon(client, sender: _Sender, sequence_id: int, answers: queue.Queue) -> None:
    """End the server's sequence now rather than at its idle timeout: a stream that failed or was closed
    early would otherwise hold one of the server's sequence slots (best effort)."""
    import tritonclient.grpc as grpcclient

    sender.join(timeout=ABANDON_WAIT_S)
    if sender.total is not None or not sender.sent:
        return  # the END request is out already, or the server never heard of this stream
    try:
        audio = grpcclient.InferInput(contract.AUDIO, [1, 0], "FP32")
        audio.set_data_from_numpy(np.zeros((1, 0), np.float32))
        client.async_stream_infer(
            contract.STREAM_MODEL, [audio], request_id="end", sequence_id=sequence_id, sequence_end=True
        )
        deadline = time.monotonic() + ABANDON_WAIT_S
        while time.monotonic() < deadline:  # until the END request was answered (error or not)
            result, _ = answers.get(timeout=max(0.01, deadline - time.monotonic()))
            if result is None or result.get_response().id == "end":
                break
    except Exception:  # noqa: BLE001 - the server frees the sequence at its idle timeout anyway
        pass


def file_chunks(
    audio: np.ndarray, chunk_seconds: float = DEFAULT_CHUNK_SECONDS, realtime: bool = False
) -> Iterator[np.ndarray]:
    """``audio`` in chunks of ``chunk_seconds``; with ``realtime``, each chunk is given when it would have
    been fully recorded (as a microphone delivers it)."""
    size = max(1, round(chunk_seconds * SAMPLE_RATE))
    started = time.perf_counter()
    for start in range(0, len(audio), size):
        chunk = audio[start : start + size]
        if realtime:
            due = started + (start + chunk.size) / SAMPLE_RATE
            time.sleep(max(0.0, due - time.perf_counter()))
        yield chunk
