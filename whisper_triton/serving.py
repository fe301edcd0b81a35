"""Request handling shared by the Triton models, free of Triton imports so it is testable directly.

Each function validates one request and raises ``RequestError`` (the client's mistake: the models
answer it with Triton's INVALID_ARG, HTTP 400) with a message that names the problem, while the rest of
the batch carries on. The feature model checks everything a request can get wrong (options against the
model, audio bytes, duration, channels, samples) before any decoding work, in the cheapest order:
options first, then the upload's size, then the container header, then the samples as they decode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from whisper_triton.audio import AudioError, load_audio
from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.manifest import ModelManifest
from whisper_triton.options import MAX_PROMPT_TOKENS, DecodingOptions, OptionsError
from whisper_triton.transcriber import assemble, prepare_windows, resolve_options

MAX_SAMPLE_MAGNITUDE = 1.0 + 1e-3  # PCM is [-1, 1]; a little room for resampler overshoot


class RequestError(ValueError):
    """A bad request: the message is returned to the client."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (the feature model's config parameters)."""

    max_seconds: float = 600.0  # audio duration
    max_bytes: int = 128 * 1024 * 1024  # an AUDIO_BYTES upload (a 10-minute 48 kHz stereo WAV is 110 MB)


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


def check_for_model(options: DecodingOptions, manifest: ModelManifest, tokenizer, has_vad: bool) -> None:
    """What the model decides: languages, task, the prompt's length in tokens, VAD availability."""
    if manifest.is_multilingual:
        if options.language is not None and options.language not in manifest.tokens.languages:
            raise RequestError(
                f"language {options.language!r} is not one this model knows: {sorted(manifest.tokens.languages)}"
            )
    elif options.language not in (None, "en") or options.task != "transcribe":
        raise RequestError(
            f"this model is English-only: language {options.language!r} / task {options.task!r} are not available"
        )
    if options.initial_prompt:
        count = len(tokenizer.encode(" " + options.initial_prompt.strip()))
        if count > MAX_PROMPT_TOKENS:
            raise RequestError(f"initial_prompt is {count} tokens; at most {MAX_PROMPT_TOKENS}")
    if (options.vad_filter or options.speech_threshold is not None) and not has_vad:
        raise RequestError("this server has no VAD model: vad_filter and speech_threshold need one")


def request_audio(audio: np.ndarray | None, audio_bytes: np.ndarray | None, limits: Limits) -> np.ndarray:
    """The request's 16 kHz mono float32 audio from AUDIO (PCM) or AUDIO_BYTES (an encoded file)."""
    if (audio is None) == (audio_bytes is None):
        raise RequestError("send exactly one of AUDIO (16 kHz float32 PCM) and AUDIO_BYTES (an encoded file)")
    if audio_bytes is not None:
        if audio_bytes.size != 1:
            raise RequestError(f"AUDIO_BYTES must hold one encoded file, got {audio_bytes.size} elements")
        data = audio_bytes.reshape(-1)[0]
        if not isinstance(data, (bytes, bytearray)):
            raise RequestError("AUDIO_BYTES must be the bytes of an encoded audio file")
        if not data:
            raise RequestError("AUDIO_BYTES is empty: the audio is empty")
        try:
            return load_audio(bytes(data), max_seconds=limits.max_seconds, max_bytes=limits.max_bytes)
        except AudioError as exc:
            raise RequestError(f"AUDIO_BYTES: {exc}") from exc
    if audio.dtype != np.float32:
        raise RequestError(f"AUDIO must be FP32, got {audio.dtype}")
    if audio.ndim != 1:
        raise RequestError(f"AUDIO must be one channel of samples (shape [N]), got shape {list(audio.shape)}")
    if audio.size == 0:
        raise RequestError("the audio is empty")
    seconds = audio.size / SAMPLE_RATE
    if seconds > limits.max_seconds:
        raise RequestError(
            f"the audio lasts {seconds:.1f} s, more than this server's maximum of {limits.max_seconds:g} s"
        )
    check_pcm_samples(audio, "the audio", ", or send the file as AUDIO_BYTES")
    return audio


def check_pcm_samples(samples: np.ndarray, name: str, advice: str = "") -> None:
    """RequestError unless every sample of non-empty float PCM is finite and within [-1, 1]."""
    bad = int(np.count_nonzero(~np.isfinite(samples)))
    if bad:
        raise RequestError(f"{name} has {bad} NaN or infinite samples")
    peak = float(np.max(np.abs(samples)))
    if peak > MAX_SAMPLE_MAGNITUDE:
        # Int16 sent as float (peak ~32767) decodes to garbage; refuse rather than guess a scale.
        raise RequestError(
            f"AUDIO samples must be in [-1, 1] (float PCM); the largest is {peak:g}. "
            f"Scale integer PCM by its full-scale value (32768 for int16){advice}"
        )


def prepare(audio, audio_bytes, options, limits: Limits, manifest: ModelManifest, tokenizer, vad=None):
    """Validated features ``[windows, n_mels, 3000]``, windows ``[windows, 3]`` (s) and options JSON."""
    decoding = request_options(options)  # first: a bad option costs no audio decoding
    check_for_model(decoding, manifest, tokenizer, vad is not None)
    pcm = request_audio(audio, audio_bytes, limits)
    decoding = resolve_options(decoding, len(pcm))
    features, windows = prepare_windows(pcm, manifest.n_mels, decoding, vad)
    return features, windows, decoding.to_json()


def response_json(
    pieces, windows: np.ndarray, options: DecodingOptions, manifest: ModelManifest
) -> tuple[str, str]:
    """TEXT and SEGMENTS (JSON) of one request from its windows' decoded pieces."""
    transcript = assemble(pieces, windows, options, manifest)
    return transcript.text, json.dumps([segment.to_dict() for segment in transcript.segments])


def check_encoder_input(features: np.ndarray, n_mels: int, n_frames: int, max_windows: int) -> None:
    """What a direct call to the encoder model may send: the feature model's output, within the limits."""
    if features.ndim != 4 or features.shape[0] != 1 or features.shape[2:] != (n_mels, n_frames):
        raise RequestError(
            f"INPUT_FEATURES must be [1, windows, {n_mels}, {n_frames}], got {list(features.shape)}"
        )
    if not 1 <= features.shape[1] <= max_windows:
        raise RequestError(
            f"INPUT_FEATURES holds {features.shape[1]} windows; 1 to {max_windows} per request"
        )
    if not np.all(np.isfinite(features)):
        raise RequestError("INPUT_FEATURES has NaN or infinite values")


def check_decoder_inputs(
    states: np.ndarray, features: np.ndarray, windows: np.ndarray, manifest: ModelManifest, max_windows: int
) -> None:
    """What a direct call to the decoding model may send: consistent shapes, sane windows, the limits."""
    count = windows.shape[1] if windows.ndim == 3 else -1
    expected = {
        "ENCODER_OUTPUT": (states, (1, count, manifest.n_audio_ctx, manifest.d_model)),
        "INPUT_FEATURES": (features, (1, count, manifest.n_mels, 2 * manifest.n_audio_ctx)),
        "WINDOWS": (windows, (1, count, 3)),
    }
    for name, (array, shape) in expected.items():
        if array.shape != shape:
            raise RequestError(
                f"{name} must be {list(shape)} (one request of the same windows), got {list(array.shape)}"
            )
    if not 1 <= count <= max_windows:
        raise RequestError(f"{count} windows in one request; 1 to {max_windows}")
    for name, (array, _) in expected.items():
        if not np.all(np.isfinite(array)):
            raise RequestError(f"{name} has NaN or infinite values")
    start, end, speech = windows[0, :, 0], windows[0, :, 1], windows[0, :, 2]
    if (
        np.any(start < 0)
        or np.any(end <= start)
        or np.any(end - start > 30.0 + 1e-3)
        or np.any(speech < start)
        or np.any(speech > end)
    ):
        raise RequestError(
            "WINDOWS must hold (start, end, speech end) with 0 <= start <= speech end <= end <= start + 30 s"
        )
