"""What decoding produces: timed segments, one decoded window, the pieces of a window, a transcript."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Segment:
    start: float
    end: float
    text: str
    language: str | None = None  # set for multilingual models: the language the window was decoded as

    def to_dict(self) -> dict:
        data = {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}
        if self.language is not None:
            data["language"] = self.language
        return data


@dataclass
class WindowResult:
    """One decoding pass over one window."""

    tokens: list[int]  # sampled tokens, without the prompt and the final end of text
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float = 0.0
    language: str | None = None  # the language it was decoded as ("en" for English-only models)
    segments: list[Segment] = field(default_factory=list)  # times from the start of the decoded audio


@dataclass
class DecodedPiece:
    """One decoded stretch of a window: its decoding began ``offset`` seconds into the window (0 for the
    first pass, the last closed timestamp for a continuation)."""

    offset: float
    result: WindowResult


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    language: str | None = None
