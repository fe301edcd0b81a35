"""Live transcription of streams: each stream's audio buffer, what it has committed, and the live streams.

The streaming model (``whisper_stream``) keeps one :class:`AudioStream` per sequence id in a
:class:`StreamRegistry`. A chunk is appended to the stream's buffer; the buffer (at most one 30-second
window) is decoded again; :class:`~whisper_triton.agreement.LocalAgreement` commits the words that this
hypothesis and the previous one agree on. The buffer is then cut at the end of the last segment whose
words are all committed, once it is longer than ``trim_seconds``, so a stream of any length runs in
bounded memory: the audio never exceeds 30 s (a chunk that would overflow it first commits the tentative
words in the audio that has to go), and a buffer in which Silero VAD hears no speech keeps only its
last ``SILENCE_KEEP_SECONDS``. Only the committed text grows (about 15 bytes per second of speech), for
the final transcript.

Nothing here imports Triton: the model is a thin adapter, and the tests drive these classes directly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from whisper_triton import contract
from whisper_triton.agreement import LocalAgreement, Word, hypothesis_words
from whisper_triton.constants import N_SAMPLES, SAMPLE_RATE
from whisper_triton.options import DecodingOptions
from whisper_triton.serving import RequestError, check_pcm_samples
from whisper_triton.vad import FRAME_SECONDS

MAX_CHUNK_SECONDS = contract.MAX_STREAM_CHUNK_SECONDS
ROOM_SEARCH_SECONDS = 5.0  # making room cuts at a segment end this far past the needed cut, if there is one
SILENCE_KEEP_SECONDS = 1.0  # a buffer without speech keeps this much (a word may be starting in it)
# A cut at a committed segment's end looks for a pause from this long before the end to this long after.
PAUSE_BEFORE_SECONDS = 1.0
PAUSE_AFTER_SECONDS = 0.3
PAUSE_PROBABILITY = 0.35  # a VAD frame below this is a pause (Silero's end-of-speech threshold)
MIN_PAUSE_FRAMES = 3  # ~0.1 s: shorter dips are inside words


class StreamLimitError(RuntimeError):
    """Every stream slot is taken: the model answers UNAVAILABLE (try again later)."""


def stream_options(options: DecodingOptions) -> DecodingOptions:
    """A stream's decoding options: timestamps are on (the buffer is cut at segment ends), so all streams
    with default options share one decoding group in the decoder's batches."""
    if options.timestamps is False:
        raise RequestError(
            "streams decode with timestamps (the buffer is cut at segment ends): leave timestamps unset"
        )
    return dataclasses.replace(options, timestamps=True)


def check_chunk(chunk: np.ndarray) -> np.ndarray:
    """One chunk of a stream as 1-D float32 PCM, or RequestError naming what is wrong with it."""
    if chunk.dtype != np.float32:
        raise RequestError(f"AUDIO chunks must be FP32 PCM, got {chunk.dtype}")
    samples = chunk.reshape(-1)
    if chunk.ndim > 2 or (chunk.ndim == 2 and chunk.shape[0] != 1):
        raise RequestError(f"AUDIO must be one chunk of samples (shape [N]), got shape {list(chunk.shape)}")
    seconds = samples.size / SAMPLE_RATE
    if seconds > MAX_CHUNK_SECONDS:
        raise RequestError(f"a chunk lasts {seconds:.1f} s; at most {MAX_CHUNK_SECONDS:g} s per chunk")
    if samples.size:  # an empty chunk is allowed (the END request carries one)
        check_pcm_samples(samples, "the chunk")
    return samples


@dataclass
class Update:
    """What one response tells the client: words newly committed, and the tentative tail now."""

    committed: list[Word]
    tentative: list[Word]

    @property
    def committed_text(self) -> str:
        return " ".join(word.text for word in self.committed)

    @property
    def tentative_text(self) -> str:
        return " ".join(word.text for word in self.tentative)

    def segments(self) -> list[dict]:
        """The committed pieces, then the tentative ones: consecutive words of one decoded segment form a
        piece, in stream seconds."""
        return _pieces(self.committed, True) + _pieces(self.tentative, False)


def _pieces(words: list[Word], committed: bool) -> list[dict]:
    pieces: list[list[Word]] = []
    for word in words:
        if pieces and pieces[-1][-1].segment == word.segment:
            pieces[-1].append(word)
        else:
            pieces.append([word])
    return [
        {
            "start": round(piece[0].start, 3),
            "end": round(piece[-1].end, 3),
            "text": " ".join(word.text for word in piece),
            "committed": committed,
        }
        for piece in pieces
    ]


class AudioStream:
    """One stream: its buffer (``offset``: the stream time of its first sample) and what it committed."""

    def __init__(
        self,
        options: DecodingOptions,
        trim_seconds: float,
        now: float,
    ):
        self.options = options
        self.trim_seconds = trim_seconds
        self.audio = np.zeros(0, np.float32)
        self.offset = 0.0
        self.agreement = LocalAgreement()
        self.transcript: list[str] = []  # every committed word, for the final text
        self.last_seen = now
        self.pending = False  # audio arrived since the last decode

    @property
    def buffer_seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE

    @property
    def received_seconds(self) -> float:
        return self.offset + self.buffer_seconds

    def append(self, chunk: np.ndarray) -> list[Word]:
        """Add a chunk; returns the words committed to make room when the buffer would exceed 30 s."""
        forced = []
        excess = self.audio.size + chunk.size - N_SAMPLES
        if excess > 0:
            forced = self._make_room(excess / SAMPLE_RATE)
        if chunk.size:
            self.audio = np.concatenate([self.audio, chunk])
            self.pending = True
        return forced

    def update(
        self, segments: list[dict], speech: bool, probabilities: np.ndarray | None = None
    ) -> list[Word]:
        """Take the decoded hypothesis of the whole buffer (``segments`` in seconds from its start);
        returns the newly committed words. ``speech``: whether VAD heard speech in the buffer at all;
        ``probabilities``: its speech probability per 32-ms frame of the buffer, to cut in a pause."""
        committed = self.agreement.insert(hypothesis_words(segments, self.offset))
        self.transcript += [word.text for word in committed]
        self.pending = False
        if not speech and not self.agreement.tentative:
            self._cut(max(self.offset, self.received_seconds - SILENCE_KEEP_SECONDS))
        elif self.buffer_seconds > self.trim_seconds:
            self._trim(probabilities)
        return committed

    def _trim(self, probabilities: np.ndarray | None) -> None:
        """Cut the buffer after the last committed segment that ends in a pause (VAD's), in the middle of
        that pause: a cut inside speech would cut a word in two, and Whisper's segment ends are often
        late or fall between two words of one sentence. Without VAD, at the last committed segment's end."""
        for count, end in reversed(self.agreement.closed_segments()):
            cut = end if probabilities is None else self._pause_near(end, probabilities)
            if self.agreement.tentative:
                cut = None if cut is None else min(cut, self.agreement.tentative[0].start)
            if cut is not None and cut > self.offset:
                self._drop_audio(cut)
                self.agreement.cut(count, self.offset)
                return

    def _pause_near(self, end: float, probabilities: np.ndarray) -> float | None:
        """The middle of the longest pause VAD finds near a segment's ``end``, or None."""
        first = max(0, int((end - PAUSE_BEFORE_SECONDS - self.offset) / FRAME_SECONDS))
        last = min(probabilities.size, int((end + PAUSE_AFTER_SECONDS - self.offset) / FRAME_SECONDS) + 1)
        quiet = np.flatnonzero(probabilities[first:last] < PAUSE_PROBABILITY)
        if quiet.size < MIN_PAUSE_FRAMES:
            return None
        runs = [
            run
            for run in np.split(quiet, np.flatnonzero(np.diff(quiet) > 1) + 1)
            if run.size >= MIN_PAUSE_FRAMES
        ]
        if not runs:
            return None
        longest = max(runs, key=len)
        return self.offset + (first + (longest[0] + longest[-1] + 1) / 2) * FRAME_SECONDS

    def finish(self) -> list[Word]:
        """The stream ends: commit the tentative tail of the last hypothesis."""
        committed = self.agreement.commit_all()
        self.transcript += [word.text for word in committed]
        return committed

    @property
    def text(self) -> str:
        return " ".join(self.transcript)

    def _make_room(self, seconds: float) -> list[Word]:
        """Drop at least ``seconds`` from the buffer's start, cutting at a segment end when the tentative
        words have one in reach; their words before the cut are committed (they will not be heard again)."""
        cut = self.offset + seconds
        ends = [w.segment[1] for w in self.agreement.tentative if w.closes_segment and w.segment[1] >= cut]
        if ends and ends[0] <= cut + ROOM_SEARCH_SECONDS:
            cut = ends[0]
        forced = self.agreement.commit_until(cut)
        self.transcript += [word.text for word in forced]
        self._cut(cut)
        return forced

    def _cut(self, time: float) -> None:
        self._drop_audio(time)
        self.agreement.forget_before(self.offset)

    def _drop_audio(self, time: float) -> None:
        samples = min(self.audio.size, max(0, round((time - self.offset) * SAMPLE_RATE)))
        self.audio = self.audio[samples:].copy()  # a copy: the dropped audio is freed
        self.offset += samples / SAMPLE_RATE


class StreamRegistry:
    """The live streams of a model instance, by sequence id: at most ``max_streams``, each dropped after
    ``idle_seconds`` without a chunk (Triton frees its own sequence slot after the same time)."""

    def __init__(
        self,
        max_streams: int,
        idle_seconds: float,
        trim_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_streams, self.idle_seconds, self.trim_seconds = max_streams, idle_seconds, trim_seconds
        self.clock = clock
        self.streams: dict[int | str, AudioStream] = {}

    def __len__(self) -> int:
        return len(self.streams)

    def sweep(self, keep: set = frozenset()) -> list[int | str]:
        """Drop the streams idle for longer than the timeout, except those in ``keep``; their ids."""
        now = self.clock()
        idle = [
            key
            for key, stream in self.streams.items()
            if now - stream.last_seen > self.idle_seconds and key not in keep
        ]
        for key in idle:
            del self.streams[key]
        return idle

    def start(self, key: int | str, options: DecodingOptions) -> AudioStream:
        """A new stream (a START chunk); a live stream with the same id starts over."""
        self.streams.pop(key, None)
        if len(self.streams) >= self.max_streams:
            raise StreamLimitError(
                f"this server transcribes at most {self.max_streams} live streams and all are in use: "
                "try again later"
            )
        stream = AudioStream(options, self.trim_seconds, self.clock())
        self.streams[key] = stream
        return stream

    def get(self, key: int | str) -> AudioStream:
        stream = self.streams.get(key)
        if stream is None:
            raise RequestError(
                f"no live stream {key!r}: start it with a START chunk (it may have ended, or been dropped "
                f"after {self.idle_seconds:g} s without a chunk)"
            )
        stream.last_seen = self.clock()
        return stream

    def end(self, key: int | str) -> None:
        self.streams.pop(key, None)

    def touch(self, key: int | str) -> None:
        """The stream's chunk was just answered: its idle time starts now."""
        if key in self.streams:
            self.streams[key].last_seen = self.clock()
