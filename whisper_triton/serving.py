"""Request handling shared by the Triton models, free of Triton imports so it is testable directly.

Each function validates one request and raises ``RequestError`` with a message that names the problem;
the models turn it into that request's error response while the rest of the batch carries on.
"""

from __future__ import annotations

import json

import numpy as np

from whisper_triton.audio import AudioError, load_audio
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.decoding import WindowResult
from whisper_triton.options import DecodingOptions, OptionsError
from whisper_triton.transcriber import assemble, long_form_options, window_features


class RequestError(ValueError):
    """A bad request: the message is returned to the client."""


def request_audio(audio: np.ndarray | None, audio_bytes: np.ndarray | None, max_seconds: float) -> np.ndarray:
    """The request's 16 kHz mono float32 audio from AUDIO (PCM) or AUDIO_BYTES (an encoded file)."""
    if (audio is None) == (audio_bytes is None):
        raise RequestError("send exactly one of AUDIO (16 kHz float32 PCM) and AUDIO_BYTES (an encoded file)")
    if audio_bytes is not None:
        if audio_bytes.size != 1:
            raise RequestError(f"AUDIO_BYTES must hold one encoded file, got {audio_bytes.size} elements")
        data = audio_bytes.reshape(-1)[0]
        try:
            pcm = load_audio(bytes(data))
        except AudioError as exc:
            raise RequestError(f"AUDIO_BYTES: {exc}") from exc
    else:
        if audio.dtype != np.float32:
            raise RequestError(f"AUDIO must be FP32, got {audio.dtype}")
        if audio.ndim != 1:
            raise RequestError(
                f"AUDIO must be one channel of samples (shape [N]), got shape {list(audio.shape)}"
            )
        pcm = audio
    if pcm.size == 0:
        raise RequestError("the audio is empty")
    if not np.all(np.isfinite(pcm)):
        raise RequestError(f"the audio has {int(np.sum(~np.isfinite(pcm)))} NaN or infinite samples")
    seconds = pcm.size / SAMPLE_RATE
    if seconds > max_seconds:
        raise RequestError(
            f"the audio lasts {seconds:.1f} s, more than this server's maximum of {max_seconds:g} s"
        )
    return pcm


def request_options(options: np.ndarray | None) -> DecodingOptions:
    if options is None:
        return DecodingOptions()
    if options.size != 1:
        raise RequestError(f"OPTIONS must hold one JSON object, got {options.size} elements")
    raw = options.reshape(-1)[0]
    try:
        return DecodingOptions.from_json(raw if isinstance(raw, (bytes, str)) else str(raw))
    except OptionsError as exc:
        raise RequestError(str(exc)) from exc


def prepare(audio, audio_bytes, options, max_seconds: float, n_mels: int):
    """Validated features ``[windows, n_mels, 3000]``, windows ``[windows, 2]`` (s) and options JSON."""
    pcm = request_audio(audio, audio_bytes, max_seconds)
    decoding = long_form_options(request_options(options), len(pcm))
    features, windows = window_features(pcm, n_mels)
    return features, windows, decoding.to_json()


def response_json(results: list[WindowResult], windows: np.ndarray) -> tuple[str, str]:
    """TEXT and SEGMENTS (JSON) of one request from its windows' results."""
    transcript = assemble(results, windows)
    return transcript.text, json.dumps([segment.to_dict() for segment in transcript.segments])
