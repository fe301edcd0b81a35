"""Request handling shared by the Triton models, free of Triton imports so it is testable directly.

Each function validates one request and raises a :class:`~whisper_triton.errors.ClientError` (the
client's mistake: :func:`error_response` answers it with Triton's INVALID_ARG, HTTP 400) with a message
that names the problem, while the rest of the batch carries on; every other exception is a server fault,
answered with INTERNAL and no internals. The feature model checks everything a request can get wrong (options against the
model, audio bytes, duration, channels, samples) before any decoding work, in the cheapest order:
options first, then the upload's size, then the container header, then the samples as they decode.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass

import numpy as np

from whisper_triton.audio import AudioError, load_audio
from whisper_triton.constants import CHUNK_LENGTH, SAMPLE_RATE
from whisper_triton.decoding import check_language_and_task, initial_prompt_tokens
from whisper_triton.errors import ClientError
from whisper_triton.manifest import ModelManifest
from whisper_triton.options import MAX_PROMPT_TOKENS, DecodingOptions
from whisper_triton.transcriber import VadUnavailable, assemble, prepare_windows, resolve_options
from whisper_triton.windows import Windows

MAX_SAMPLE_MAGNITUDE = 1.0 + 1e-3  # PCM is [-1, 1]; a little room for resampler overshoot


class RequestError(ClientError):
    """A bad request: the message is returned to the client."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (the feature model's config parameters)."""

    max_seconds: float = 600.0  # audio duration
    max_bytes: int = 128 * 1024 * 1024  # an AUDIO_BYTES upload (a 10-minute 48 kHz stereo WAV is 110 MB)


DEFAULT_LIMITS = Limits()  # the build's defaults (ServingSettings) come from here


def request_options(options: np.ndarray | None) -> DecodingOptions:
    if options is None:
        return DecodingOptions()
    if options.size != 1:
        raise RequestError(f"OPTIONS must hold one JSON object, got {options.size} elements")
    raw = options.reshape(-1)[0]
    return DecodingOptions.from_json(raw if isinstance(raw, (bytes, str)) else str(raw))


def check_for_model(options: DecodingOptions, manifest: ModelManifest, tokenizer, has_vad: bool) -> None:
    """What the model decides: languages, task, the prompt's length in tokens, VAD availability."""
    check_language_and_task(manifest, options)
    count = len(initial_prompt_tokens(tokenizer, options))
    if count > MAX_PROMPT_TOKENS:
        raise RequestError(f"initial_prompt is {count} tokens; at most {MAX_PROMPT_TOKENS}")
    if (options.vad_filter or options.speech_threshold is not None) and not has_vad:
        raise VadUnavailable("this server has no VAD model: vad_filter and speech_threshold need one")


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
        except AudioError as exc:  # name the input that held the bad file
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


class FeatureStage:
    """What the feature model does with a request, for one model: its manifest and tokenizer, its VAD
    (or None) and the server's limits, bound once."""

    def __init__(self, manifest: ModelManifest, tokenizer, vad=None, limits: Limits = DEFAULT_LIMITS):
        self.manifest, self.tokenizer, self.vad, self.limits = manifest, tokenizer, vad, limits

    def prepare(self, audio, audio_bytes, options) -> tuple[np.ndarray, np.ndarray, str]:
        """Validated features ``[windows, n_mels, 3000]``, the WINDOWS array ``[windows, 3]`` (s) and the
        options JSON of one request's AUDIO, AUDIO_BYTES and OPTIONS inputs (None where absent)."""
        decoding = request_options(options)  # first: a bad option costs no audio decoding
        check_for_model(decoding, self.manifest, self.tokenizer, self.vad is not None)
        pcm = request_audio(audio, audio_bytes, self.limits)
        decoding = resolve_options(decoding, len(pcm))
        features, windows = prepare_windows(pcm, self.manifest.n_mels, decoding, self.vad)
        return features, windows.to_array(), decoding.to_json()


def response_json(
    pieces, windows: Windows, options: DecodingOptions, manifest: ModelManifest
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
    named = Windows.from_array(windows[0])
    if (
        np.any(named.start < 0)
        or np.any(named.duration <= 0)
        or np.any(named.duration > CHUNK_LENGTH + 1e-3)
        or np.any(named.speech < 0)
        or np.any(named.speech_end > named.end)
    ):
        raise RequestError(
            "WINDOWS must hold (start, end, speech end) with "
            f"0 <= start <= speech end <= end <= start + {CHUNK_LENGTH} s"
        )


def error_response(pb_utils, model: str, exc: BaseException):
    """Triton's response to a request that failed with ``exc``: a :class:`ClientError` is the client's
    mistake (INVALID_ARG with its message); anything else is a server fault, logged in full and answered
    with INTERNAL and a message that reveals nothing of our code. ``pb_utils`` is the Python backend's
    ``triton_python_backend_utils`` (passed in: this module imports nothing of Triton)."""
    if isinstance(exc, ClientError):
        error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
    else:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        pb_utils.Logger.log_error(f"{model}: {trace}")
        error = pb_utils.TritonError(
            f"internal error in {model} (see the server log)", pb_utils.TritonError.INTERNAL
        )
    return pb_utils.InferenceResponse(error=error)
