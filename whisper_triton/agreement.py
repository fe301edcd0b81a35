"""LocalAgreement-2 (whisper_streaming's commit policy): commit the words two consecutive hypotheses agree on.

A stream's audio buffer is decoded again after every chunk. Each decode gives a hypothesis for the whole
buffer, and the buffer still holds the audio of words committed earlier (it is only cut at the end of a
committed segment), so each hypothesis first loses the words already committed; of what remains, the
longest prefix it shares with the previous hypothesis's remainder is committed. Committed words are never
changed or taken back; the rest is the tentative tail, which the next hypothesis may rewrite.

Whisper gives timestamps per segment, not per word: a word's times are estimated by its position in the
characters of its segment (exact at segment boundaries, which is where the buffer is cut).
Words are compared case- and punctuation-blind, because Whisper often re-punctuates the end of a
growing hypothesis ("today" -> "today,") without changing what was said.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from difflib import SequenceMatcher

# Committed words that a new decode changed are matched to the new hypothesis's words that start before
# the last committed word ends, plus this much slack (estimated word times are coarse).
OVERLAP_SLACK_SECONDS = 0.2
# After a cut, a hypothesis may repeat the last committed words (a segment's end timestamp came early):
# a leading run of up to this many words equal to the committed ones is dropped (whisper_streaming's rule).
MAX_REPEATED_WORDS = 5
REPEAT_WITHIN_SECONDS = 1.0  # ... when the run starts this close to the end of the committed words


@dataclass(frozen=True)
class Word:
    text: str  # as Whisper wrote it, with its punctuation
    start: float  # stream seconds (estimated within its segment)
    end: float
    segment: tuple[float, float]  # start and end of the decoded segment the word came from
    closes_segment: bool  # the last word of that segment: the buffer may be cut at the segment's end

    @property
    def key(self) -> str:
        """What two hypotheses must agree on: the word without case and surrounding punctuation."""
        return _normalise(self.text)


def _normalise(text: str) -> str:
    stripped = re.sub(r"[^\w']+", "", text.lower()).strip("'")
    return stripped or text  # a word of punctuation only ("-", "...") compares as itself


def hypothesis_words(segments: list[dict], offset: float) -> list[Word]:
    """The words of decoded ``segments`` (``{"start", "end", "text"}``, seconds from the buffer's start),
    in stream time (``offset``: the stream time of the buffer's first sample)."""
    words: list[Word] = []
    for segment in segments:
        text = segment["text"].strip()
        start, end = offset + float(segment["start"]), offset + float(segment["end"])
        spans = [match.span() for match in re.finditer(r"\S+", text)]
        for index, (first, last) in enumerate(spans):
            words.append(
                Word(
                    text[first:last],
                    start + (end - start) * first / len(text),
                    start + (end - start) * last / len(text),
                    (start, end),
                    closes_segment=index == len(spans) - 1,
                )
            )
    return words


def _agreed(first: list[Word], second: list[Word]) -> int:
    count = 0
    for a, b in zip(first, second, strict=False):
        if a.key != b.key:
            break
        count += 1
    return count


class LocalAgreement:
    """The committed words still inside a stream's buffer, and the tentative tail of the last hypothesis."""

    def __init__(self) -> None:
        self.in_buffer: list[Word] = []  # committed words whose audio the buffer still holds
        self.tentative: list[Word] = []  # the previous hypothesis after the committed words
        self.last_end = 0.0  # stream time where the last committed word ends
        self.recent: list[Word] = []  # the last committed words, kept across cuts
        self.committed_until = 0.0  # where the last committed word ends (never decreases)

    def insert(self, hypothesis: list[Word]) -> list[Word]:
        """Words newly committed by this hypothesis of the whole buffer."""
        new = self._after_committed(hypothesis)
        count = _agreed(new, self.tentative)
        committed, self.tentative = new[:count], new[count:]
        return self._commit(committed)

    def commit_all(self) -> list[Word]:
        """The stream ends: the tentative tail is all there is to say."""
        committed, self.tentative = self.tentative, []
        return self._commit(committed)

    def commit_until(self, time: float) -> list[Word]:
        """Commit the tentative words that end by ``time`` (the buffer must drop the audio before it)."""
        count = 0
        while count < len(self.tentative) and self.tentative[count].end <= time + 1e-6:
            count += 1
        committed, self.tentative = self.tentative[:count], self.tentative[count:]
        return self._commit(committed)

    def forget_before(self, time: float) -> None:
        """The buffer now starts at ``time``: drop what is wholly before it."""
        self.in_buffer = [word for word in self.in_buffer if word.end > time + 1e-6]
        self.tentative = [word for word in self.tentative if word.end > time + 1e-6]

    def closed_segments(self) -> list[tuple[int, float]]:
        """(committed words up to it, its end) of each segment whose words are all committed, in order:
        where the buffer may be cut."""
        return [
            (index + 1, word.segment[1]) for index, word in enumerate(self.in_buffer) if word.closes_segment
        ]

    def cut(self, count: int, time: float) -> None:
        """The buffer now starts at ``time``, after the first ``count`` committed words (a pause near the
        end of their segment, whose timestamp may be off: the words are dropped by count, not by time)."""
        self.in_buffer = self.in_buffer[count:]
        self.tentative = [word for word in self.tentative if word.end > time + 1e-6]
        if not self.in_buffer:
            self.last_end = time  # everything the buffer holds now is after the committed words

    def _commit(self, words: list[Word]) -> list[Word]:
        """Commit ``words``; returns them with times that never go back: each hypothesis estimates word
        times anew, and committed pieces must come in stream order."""
        ordered = []
        for word in words:
            if word.start < self.committed_until:
                start = self.committed_until
                word = dataclasses.replace(word, start=start, end=max(word.end, start))
            self.committed_until = word.end
            ordered.append(word)
        self.in_buffer += ordered
        self.recent = (self.recent + ordered)[-MAX_REPEATED_WORDS:]
        if ordered:
            self.last_end = max(self.last_end, ordered[-1].end)
        return ordered

    def _after_committed(self, hypothesis: list[Word]) -> list[Word]:
        """The part of ``hypothesis`` after the committed words (whose audio the buffer still holds)."""
        committed = self.in_buffer
        if not committed:
            return self._after_time(hypothesis)
        keys = [word.key for word in hypothesis]
        if keys[: len(committed)] == [word.key for word in committed]:
            return hypothesis[len(committed) :]  # the usual case: the decode repeats what was committed
        # The decode changed some committed words: align the two and continue after the last match.
        matcher = SequenceMatcher(None, [word.key for word in committed], keys, autojunk=False)
        blocks = [block for block in matcher.get_matching_blocks() if block.size]
        if not blocks:
            return self._after_time(hypothesis)
        last = blocks[-1]
        cut = last.b + last.size
        # Committed words after the last match were rewritten: skip their new versions, the hypothesis
        # words that start while the committed words are still being spoken.
        unmatched = len(committed) - (last.a + last.size)
        while (
            unmatched > 0
            and cut < len(hypothesis)
            and hypothesis[cut].start < self.last_end + OVERLAP_SLACK_SECONDS
        ):
            cut += 1
            unmatched -= 1
        return hypothesis[cut:]

    def _after_time(self, hypothesis: list[Word]) -> list[Word]:
        """Without committed words to align with (after a cut): the words that end after the last
        committed word did."""
        if not self.last_end:
            return hypothesis
        new = [word for word in hypothesis if word.end > self.last_end + 1e-6]
        if not new or new[0].start > self.last_end + REPEAT_WITHIN_SECONDS:
            return new  # well after the committed words: a repeated word there was said again
        recent = [word.key for word in self.recent]
        for size in range(min(len(recent), len(new)), 0, -1):
            if [word.key for word in new[:size]] == recent[-size:]:
                return new[size:]
        return new
