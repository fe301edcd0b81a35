"""The streaming model's logic without a server: LocalAgreement-2, buffer trimming, the stream registry."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_triton.agreement import LocalAgreement, hypothesis_words
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.options import DecodingOptions
from whisper_triton.serving import RequestError
from whisper_triton.streaming import (
    AudioStream,
    StreamLimitError,
    StreamRegistry,
    check_chunk,
    stream_options,
)
from whisper_triton.vad import FRAME_SECONDS


def _segment(start, end, text):
    return {"start": start, "end": end, "text": text}


def test_words_get_times_within_their_segment():
    words = hypothesis_words(
        [_segment(0.0, 2.0, " Hello there,"), _segment(2.0, 3.0, " friend.")], offset=10.0
    )
    assert [w.text for w in words] == ["Hello", "there,", "friend."]
    assert words[0].start == 10.0 and words[1].end == 12.0 and words[2].end == 13.0
    assert 10.0 < words[0].end < words[1].start < 12.0
    assert [w.closes_segment for w in words] == [False, True, True]
    assert words[0].key == words[0].key == "hello" and words[1].key == "there"


def _hypothesis(text, end, offset=0.0):
    return hypothesis_words([_segment(0.0, end, text)], offset)


def test_local_agreement_commits_what_two_hypotheses_share_and_never_retracts():
    agreement = LocalAgreement()
    assert agreement.insert(_hypothesis(" The cat", 1.0)) == []  # nothing to agree with yet
    committed = agreement.insert(_hypothesis(" The cat sat", 2.0))
    assert [w.text for w in committed] == ["The", "cat"]
    assert [w.text for w in agreement.tentative] == ["sat"]
    # The next hypothesis rewrites a committed word and punctuates: committed words stay, and are not
    # committed again.
    committed = agreement.insert(_hypothesis(" the hat sat on the mat.", 3.0))
    assert [w.text for w in committed] == ["sat"]
    committed = agreement.insert(_hypothesis(" The cat sat on the mat, today", 4.0))
    assert [w.text for w in committed] == ["on", "the", "mat,"]  # "mat." and "mat," agree
    assert [w.text for w in agreement.commit_all()] == ["today"]


def _synthetic_stream(trim_seconds, total_seconds=95.0, chunk_seconds=1.0, sentence_words=6):
    """A stream whose "decoder" knows the truth: a word every 0.5 s, sentences of ``sentence_words``, each
    a segment ending where its last word ends. Returns the stream, the words, every committed word
    list and the largest buffer seen."""
    words = [(f"w{i}", 0.5 * i + 0.1, 0.5 * i + 0.45) for i in range(int(total_seconds / 0.5) - 1)]
    stream = AudioStream(stream_options(DecodingOptions()), trim_seconds, now=0.0)
    chunk = np.zeros(round(chunk_seconds * SAMPLE_RATE), np.float32)
    commits, largest = [], 0.0
    while stream.received_seconds < total_seconds:
        commits.append(stream.append(chunk))
        largest = max(largest, stream.buffer_seconds)
        heard = [w for w in words if stream.offset <= w[1] and w[2] <= stream.received_seconds]
        segments = []
        for i in range(0, len(heard), sentence_words):
            sentence = heard[i : i + sentence_words]
            segments.append(
                _segment(
                    sentence[0][1] - stream.offset,
                    sentence[-1][2] - stream.offset,
                    " " + " ".join(w[0] for w in sentence),
                )
            )
        commits.append(stream.update(segments, speech=True))
    commits.append(stream.finish())
    return stream, [w[0] for w in words], commits, largest


@pytest.mark.parametrize("trim_seconds", [0.0, 10.0, 30.0])
def test_buffer_stays_bounded_and_no_word_is_lost_or_repeated(trim_seconds):
    stream, words, commits, largest = _synthetic_stream(trim_seconds)
    assert stream.text.split() == words
    assert [w.text for batch in commits for w in batch] == words
    assert largest <= 30.0 + 1e-6
    if trim_seconds < 30:
        # Cut at the last committed sentence past the threshold: a sentence (3 s), the chunk that brought
        # it, and the chunk that confirmed it may be on top.
        assert largest <= trim_seconds + 5.0


def test_the_buffer_is_cut_in_a_pause_after_a_committed_segment():
    """Past trim_seconds the buffer is cut in the middle of a VAD pause near the end of a committed
    segment: not at a segment end inside speech (3.0 s and 3.9 s here), never inside a word."""
    stream = AudioStream(stream_options(DecodingOptions()), trim_seconds=2.0, now=0.0)
    stream.append(np.zeros(4 * SAMPLE_RATE, np.float32))
    segments = [
        _segment(0.0, 1.5, " One two three."),
        _segment(1.5, 3.0, " Four five six."),
        _segment(3.0, 3.9, " Seven"),
    ]
    probabilities = np.ones(round(4 / FRAME_SECONDS), np.float32)
    probabilities[round(1.6 / FRAME_SECONDS) : round(2.0 / FRAME_SECONDS)] = 0.05  # a pause, 1.6-2.0 s
    assert stream.update(segments, True, probabilities) == []
    committed = stream.update(segments, True, probabilities)
    assert len(committed) == 7
    # The pause within reach of the first segment's end (up to 0.3 s after it) is 1.6-1.8 s.
    assert stream.offset == pytest.approx(1.7, abs=FRAME_SECONDS)
    assert [w.text for w in stream.agreement.in_buffer] == ["Four", "five", "six.", "Seven"]
    stream.append(np.zeros(SAMPLE_RATE, np.float32))
    later = [_segment(0.0, 1.3, " Four five six."), _segment(1.3, 2.2, " Seven eight")]
    stream.update(later, True, None)
    assert [w.text for w in stream.agreement.tentative] == ["eight"]  # no committed word comes back


def test_a_buffer_without_speech_keeps_only_its_last_second():
    stream = AudioStream(stream_options(DecodingOptions()), 10.0, now=0.0)
    for _ in range(5):
        stream.append(np.zeros(SAMPLE_RATE, np.float32))
        assert stream.update([], speech=False) == []
    assert stream.buffer_seconds == pytest.approx(1.0) and stream.offset == pytest.approx(4.0)


def test_registry_caps_live_streams_and_frees_idle_ones():
    now = [0.0]
    registry = StreamRegistry(max_streams=2, idle_seconds=5.0, trim_seconds=10.0, clock=lambda: now[0])
    options = stream_options(DecodingOptions())
    registry.start(1, options)
    registry.start("two", options)
    with pytest.raises(StreamLimitError, match="at most 2 live streams"):
        registry.start(3, options)
    registry.start(1, options)  # the same id starts over: no new slot
    now[0] = 4.0
    registry.get(1)  # a chunk keeps stream 1 alive
    now[0] = 6.0
    assert registry.sweep(keep={"two"}) == []  # its next chunk is here: it waited in Triton's queue
    assert registry.sweep() == ["two"] and len(registry) == 1
    registry.start(3, options)
    with pytest.raises(RequestError, match="no live stream 'two'"):
        registry.get("two")
    registry.end(1)
    assert set(registry.streams) == {3}


@pytest.mark.parametrize(
    "chunk, message",
    [
        (np.zeros(16000, np.float64), "FP32"),
        (np.zeros((2, 100), np.float32), "shape"),
        (np.zeros(16 * SAMPLE_RATE, np.float32), "at most 15 s"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.full(100, 3000.0, np.float32), r"\[-1, 1\]"),
    ],
)
def test_bad_chunks_are_refused_with_the_reason(chunk, message):
    with pytest.raises(RequestError, match=message):
        check_chunk(chunk)


def test_streams_need_timestamps():
    assert stream_options(DecodingOptions()).timestamps is True
    with pytest.raises(RequestError, match="timestamps"):
        stream_options(DecodingOptions(timestamps=False))
    assert check_chunk(np.zeros((1, 0), np.float32)).size == 0  # an empty chunk (the END request) is fine
