"""Transcript output formats: txt, json, srt, vtt."""

from __future__ import annotations

import json

FORMATS = ("txt", "json", "srt", "vtt")


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def render(text: str, segments: list[dict], fmt: str) -> str:
    if fmt == "txt":
        return text + "\n"
    if fmt == "json":
        return json.dumps({"text": text, "segments": segments}, indent=2) + "\n"
    if fmt == "srt":
        blocks = [
            f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text']}\n"
            for i, s in enumerate(segments, 1)
        ]
        return "\n".join(blocks)
    if fmt == "vtt":
        cues = [f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text']}\n" for s in segments]
        return "WEBVTT\n\n" + "\n".join(cues)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
