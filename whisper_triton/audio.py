"""Audio in: decode any file or byte string to 16 kHz mono float32, validate it, and tidy it.

This is the one audio front end of the project: the client, the Triton feature model and training all
call it, so it imports only numpy, soundfile, soxr and (lazily) PyAV; no torch, transformers or librosa.

Conventions:

- Samples are float32 in [-1, 1]. Integer PCM arrays are scaled by their full-scale value.
- A 2-D array is one recording with several channels, laid out as ``[channels, samples]`` *or*
  ``[samples, channels]``: the shorter axis is taken as the channel axis (a recording has far more samples
  than channels). Square arrays are ambiguous and rejected; so are arrays whose shorter axis exceeds
  ``MAX_CHANNELS``, which look like a batch of clips rather than one recording. Channels are averaged.
- Every problem raises :class:`AudioError` (a ``ValueError``) whose message names the source.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from whisper_triton.constants import HOP_LENGTH, N_FFT, SAMPLE_RATE
from whisper_triton.errors import ClientError

MAX_CHANNELS = (
    16  # more than any common layout (7.1.4 surround has 12); a wider axis is a batch, not channels
)
NORMALIZE_PEAK = (
    0.95  # peak after normalisation: 0.45 dB of headroom so resampling/augmentation overshoot won't clip
)
TRIM_TOP_DB = (
    60.0  # frames this far below the loudest frame's energy count as silence (librosa.effects.trim's default)
)
# Trimming looks at Whisper's own analysis frames (25 ms windows every 10 ms): it can cut no finer than the
# encoder can see.
TRIM_FRAME_LENGTH = N_FFT
TRIM_HOP_LENGTH = HOP_LENGTH
RESAMPLE_QUALITY = "HQ"  # soxr's "high quality" preset (20-bit precision): transparent for speech
DECODE_BLOCK_SECONDS = 10  # decoding reads, mixes down and resamples this much audio at a time
HEADER_SLACK = 1.05  # container durations are estimates (VBR MP3): refuse early only when clearly over
# The FFmpeg demuxers an upload may use: audio and audio-in-video containers. Not allowed: playlists
# (concat, hls) that open other files, sdp/rtp/rtsp that open sockets, devices, image sequences.
FFMPEG_DEMUXERS = (
    "aac",
    "ac3",
    "aiff",
    "amr",
    "ape",
    "asf",
    "au",
    "caf",
    "eac3",
    "flac",
    "matroska,webm",
    "mov,mp4,m4a,3gp,3g2,mj2",
    "mp3",
    "ogg",
    "tta",
    "w64",
    "wav",
    "wv",
)


class AudioError(ClientError, ValueError):
    """Audio that cannot be used: missing, undecodable, empty, non-finite or of an unusable shape (a
    ``ValueError`` for Python callers, a ``ClientError`` for servers)."""


def load_audio(
    source: str | Path | bytes | bytearray | memoryview,
    sample_rate: int = SAMPLE_RATE,
    *,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Decode a file or an encoded byte string to mono float32 at ``sample_rate`` (16 kHz by default).

    WAV, FLAC, OGG/Vorbis and the other formats libsndfile knows (MP3 too, from libsndfile 1.1) are read
    with soundfile; anything else (m4a/AAC, webm/Opus, video containers, ...) is decoded with PyAV, whose
    FFmpeg may only use the audio container demuxers of ``FFMPEG_DEMUXERS`` (no playlists, network
    sessions or devices: an upload never makes the server open another file or a socket).

    Bounded: ``max_bytes`` is checked before anything is parsed; the duration and channels are read from
    the container before decoding, and decoding runs in blocks, mixed down to mono and resampled as it
    goes, stopping as soon as ``max_seconds`` is passed (whatever the header claimed). Memory is then the
    output and one block, never the whole decoded stream.

    Raises :class:`AudioError` for a missing or empty file, undecodable data, audio with no samples,
    NaN or infinite samples, too many channels, and audio over the limits.
    """
    _check_rate(sample_rate, "target sample_rate")
    name, data = _open_source(source, max_bytes)
    limit = _Limit(name, max_seconds)
    try:
        return _read_soundfile(data, sample_rate, limit)
    except AudioError:
        raise
    except (sf.SoundFileError, RuntimeError, TypeError) as sf_error:
        data = _rewind(data)
        try:
            return _read_pyav(data, name, sample_rate, limit)
        except AudioError:
            raise
        except Exception as av_error:  # PyAV raises FFmpegError subclasses, ValueError and OSError
            raise AudioError(
                f"{name}: cannot decode audio (soundfile: {_reason(sf_error)}; FFmpeg: {_reason(av_error)})"
            ) from av_error


def preprocess_audio(
    audio: np.ndarray,
    sample_rate: int,
    normalize: bool = True,
    trim_silence: bool = False,
    *,
    peak: float = NORMALIZE_PEAK,
    top_db: float = TRIM_TOP_DB,
) -> np.ndarray:
    """Turn an in-memory waveform into what Whisper expects: mono float32 at 16 kHz.

    ``audio`` is 1-D or 2-D (see the module docstring for the channel layout rule), float or integer PCM,
    sampled at ``sample_rate`` Hz. Steps, in order: mix to mono, validate (non-empty, finite), resample to
    16 kHz if needed, trim leading/trailing silence when ``trim_silence`` (see :func:`strip_silence`), then
    scale so the peak magnitude is ``peak`` when ``normalize`` (all-zero audio is returned unscaled).
    The input array is never modified. Raises :class:`AudioError` for unusable input.
    """
    _check_rate(sample_rate, "sample_rate")
    mono = to_mono(audio, "audio")
    out = _finish(mono, sample_rate, SAMPLE_RATE, "audio")
    if trim_silence:
        out = strip_silence(out, top_db=top_db)
    if normalize:
        out = peak_normalize(out, peak)
    return out


def resample(audio: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float audio with soxr (high quality); a no-op copy when the rates already match."""
    _check_rate(orig_rate, "orig_rate")
    _check_rate(target_rate, "target_rate")
    audio = np.asarray(audio, dtype=np.float32)
    if orig_rate == target_rate:
        return audio.copy()
    return np.ascontiguousarray(
        soxr.resample(audio, orig_rate, target_rate, quality=RESAMPLE_QUALITY), np.float32
    )


def to_mono(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """Mix a 1-D or 2-D waveform down to 1-D float32 (integer PCM is scaled to [-1, 1], floats kept as they are)."""
    audio = _as_float32(np.asarray(audio), name)
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise AudioError(f"{name}: expected 1-D or 2-D audio, got shape {audio.shape}")
    rows, cols = audio.shape
    if rows == cols and rows > 1:
        raise AudioError(
            f"{name}: ambiguous channel layout {audio.shape}; pass [channels, samples] with more samples than channels"
        )
    channel_axis = 0 if rows <= cols else 1
    if audio.shape[channel_axis] > MAX_CHANNELS:
        raise AudioError(
            f"{name}: shape {audio.shape} has {audio.shape[channel_axis]} channels (at most {MAX_CHANNELS}); "
            "is this a batch of clips?"
        )
    return audio.mean(axis=channel_axis, dtype=np.float32)


def peak_normalize(audio: np.ndarray, peak: float = NORMALIZE_PEAK) -> np.ndarray:
    """Scale ``audio`` so that its largest magnitude is ``peak``; all-zero audio is returned unchanged."""
    if not (np.isfinite(peak) and 0 < peak <= 1):
        raise ValueError(f"peak must be in (0, 1], got {peak}")
    audio = np.asarray(audio, dtype=np.float32)
    current = float(np.max(np.abs(audio))) if audio.size else 0.0
    if current == 0.0:
        return audio.copy()
    return (audio * np.float32(peak / current)).astype(np.float32, copy=False)


def strip_silence(
    audio: np.ndarray,
    top_db: float = TRIM_TOP_DB,
    frame_length: int = TRIM_FRAME_LENGTH,
    hop_length: int = TRIM_HOP_LENGTH,
) -> np.ndarray:
    """Cut leading and trailing silence from 1-D audio.

    The audio is cut into frames of ``frame_length`` samples every ``hop_length`` samples (the last ones
    shorter); a frame is silent when its mean power is more than ``top_db`` dB below the loudest frame's.
    The result runs from the start of the first non-silent frame to the end of the last one, so at most
    ``frame_length`` samples of quiet surround the sound. Silence inside the audio is kept. All-zero audio
    has no reference level and is returned unchanged.
    """
    if not (np.isfinite(top_db) and top_db > 0):
        raise ValueError(f"top_db must be a positive number of decibels, got {top_db}")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise AudioError(f"audio: strip_silence expects 1-D audio, got shape {audio.shape}")
    # Frame energies from a running sum of squares: O(n) and no [frames, frame_length] copy.
    energy = np.concatenate(([0.0], np.cumsum(np.square(audio, dtype=np.float64))))
    starts = np.arange(0, audio.size, hop_length)
    ends = np.minimum(starts + frame_length, audio.size)
    power = (energy[ends] - energy[starts]) / (ends - starts)
    loudest = power.max() if power.size else 0.0
    if loudest <= 0.0:
        return audio.copy()
    loud = power > loudest * 10.0 ** (-top_db / 10.0)
    first = int(np.argmax(loud))
    last = len(loud) - 1 - int(np.argmax(loud[::-1]))
    return audio[starts[first] : ends[last]].copy()


def _open_source(source, max_bytes: int | None = None) -> tuple[str, str | io.BytesIO]:
    """A name for messages and something soundfile/PyAV can open; rejects missing, empty and oversized inputs."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = len(source)
        name = f"<{size} bytes of audio>"
        if not size:
            raise AudioError(f"{name}: no data")
        if max_bytes is not None and size > max_bytes:
            raise AudioError(f"{name}: the upload is {size} bytes, more than the maximum of {max_bytes}")
        return name, io.BytesIO(bytes(source))
    if not isinstance(source, (str, Path)):
        raise TypeError(f"load_audio expects a path or bytes, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise AudioError(f"{path}: the file is {size} bytes, more than the maximum of {max_bytes}")
    return str(path), str(path)


def _reason(error: Exception) -> str:
    """A decoder's error without the object reprs and addresses it quotes (``<_io.BytesIO object at ...>``)."""
    return re.sub(r"^.*<[^>]*object at 0x[0-9a-f]+>:?\s*", "", str(error)).strip() or type(error).__name__


def _rewind(data: str | io.BytesIO) -> str | io.BytesIO:
    if isinstance(data, io.BytesIO):
        data.seek(0)
    return data


class _Limit:
    """The duration budget of one decode, checked on the header and again while decoding."""

    def __init__(self, name: str, max_seconds: float | None):
        self.name, self.max_seconds = name, max_seconds

    def check_header(self, seconds: float | None, channels: int) -> None:
        if channels < 1:
            raise AudioError(f"{self.name}: no audio channels")
        if channels > MAX_CHANNELS:
            raise AudioError(f"{self.name}: {channels} channels; at most {MAX_CHANNELS}")
        if self.max_seconds is not None and seconds is not None and seconds > self.max_seconds * HEADER_SLACK:
            raise AudioError(self._too_long(seconds))

    def check_decoded(self, samples: int, rate: int) -> None:
        if self.max_seconds is not None and samples > self.max_seconds * rate:
            raise AudioError(self._too_long(samples / rate, "at least "))

    def _too_long(self, seconds: float, qualifier: str = "") -> str:
        return (
            f"{self.name}: the audio lasts {qualifier}{seconds:.1f} s, more than the maximum of "
            f"{self.max_seconds:g} s"
        )


class _MonoStream:
    """Blocks of multichannel float audio in, validated mono resampled to ``target`` out."""

    def __init__(self, name: str, rate: int, target: int, limit: _Limit):
        _check_rate(rate, f"{name}: sample rate")
        self.name, self.rate, self.limit = name, rate, limit
        self.decoded, self.parts, self.non_finite = 0, [], 0
        self._stream = (
            None if rate == target else soxr.ResampleStream(rate, target, 1, "float32", RESAMPLE_QUALITY)
        )

    def add(self, block: np.ndarray) -> None:
        """``block``: ``[channels, samples]`` float32."""
        mono = block.mean(axis=0, dtype=np.float32) if block.shape[0] > 1 else block[0].astype(np.float32)
        self.decoded += mono.size
        self.limit.check_decoded(self.decoded, self.rate)
        self.non_finite += int(np.count_nonzero(~np.isfinite(mono)))
        if self.non_finite:
            return  # reported at the end with the count; nothing more to resample
        self.parts.append(mono if self._stream is None else self._stream.resample_chunk(mono))

    def finish(self) -> np.ndarray:
        if self.decoded == 0:
            raise AudioError(f"{self.name}: contains no audio samples")
        if self.non_finite:
            raise AudioError(f"{self.name}: {self.non_finite} of {self.decoded} samples are NaN or infinite")
        if self._stream is not None:
            self.parts.append(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        return np.ascontiguousarray(np.concatenate(self.parts), dtype=np.float32)


def _read_soundfile(data: str | io.BytesIO, target: int, limit: _Limit) -> np.ndarray:
    with sf.SoundFile(data) as handle:
        seconds = handle.frames / handle.samplerate if handle.frames > 0 else None
        limit.check_header(seconds, handle.channels)
        stream = _MonoStream(limit.name, handle.samplerate, target, limit)
        for block in handle.blocks(
            blocksize=DECODE_BLOCK_SECONDS * handle.samplerate, dtype="float32", always_2d=True
        ):
            stream.add(block.T)
    return stream.finish()


def _read_pyav(data: str | io.BytesIO, name: str, target: int, limit: _Limit) -> np.ndarray:
    # Imported here: PyAV loads all of FFmpeg's libraries and is only needed for formats libsndfile lacks.
    import av

    with av.open(data, mode="r", options={"format_whitelist": ",".join(FFMPEG_DEMUXERS)}) as container:
        if not container.streams.audio:
            raise AudioError(f"{name}: no audio stream in the file")
        audio_stream = container.streams.audio[0]
        context = audio_stream.codec_context
        seconds = container.duration / av.time_base if container.duration else None
        limit.check_header(seconds, context.channels)
        # Convert to float planar only: soxr resamples and we mix down ourselves.
        resampler = av.AudioResampler(format="fltp")
        stream = None
        for frame in container.decode(audio_stream):
            for out in resampler.resample(frame):
                stream = stream or _MonoStream(name, out.sample_rate, target, limit)
                stream.add(out.to_ndarray())
        for out in resampler.resample(None):
            stream = stream or _MonoStream(name, out.sample_rate, target, limit)
            stream.add(out.to_ndarray())
    if stream is None:
        raise AudioError(f"{name}: the audio stream decoded to no samples")
    return stream.finish()


def _finish(mono: np.ndarray, rate: int, target_rate: int, name: str) -> np.ndarray:
    """Validate decoded mono audio, then resample it."""
    if mono.size == 0:
        raise AudioError(f"{name}: contains no audio samples")
    bad = np.count_nonzero(~np.isfinite(mono))
    if bad:
        raise AudioError(f"{name}: {bad} of {mono.size} samples are NaN or infinite")
    return resample(mono, rate, target_rate)


def _as_float32(audio: np.ndarray, name: str) -> np.ndarray:
    kind = audio.dtype.kind
    if kind == "f":
        return audio.astype(np.float32, copy=False)
    if kind == "i":  # signed PCM: full scale is 2**(bits-1), e.g. 32768 for int16
        return (audio / float(2 ** (8 * audio.dtype.itemsize - 1))).astype(np.float32)
    if kind == "u":  # unsigned PCM (8-bit WAV) is offset binary: silence is half of full scale
        half = float(2 ** (8 * audio.dtype.itemsize - 1))
        return ((audio - half) / half).astype(np.float32)
    raise AudioError(f"{name}: expected float or integer PCM samples, got dtype {audio.dtype}")


def _check_rate(rate, what: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{what} must be a positive integer number of Hz, got {rate!r}")
