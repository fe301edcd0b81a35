"""Microphone audio for ``whisper-triton stream --mic``: chunks of 16 kHz mono float32 as they are recorded.

sounddevice (PortAudio) is the optional ``mic`` extra: without it, without the PortAudio library, or
without an input device, :class:`MicrophoneError` says which, in one line. The device records at its own
rate (many take only 44.1 or 48 kHz); the blocks are resampled to 16 kHz with soxr as they arrive.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

import numpy as np
import soxr

from whisper_triton.constants import SAMPLE_RATE


class MicrophoneError(RuntimeError):
    """No microphone to record from; the message says what is missing."""


def _sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise MicrophoneError("the microphone needs sounddevice: pip install 'whisper-triton[mic]'") from None
    except OSError as error:  # the module loads PortAudio at import
        raise MicrophoneError(
            f"sounddevice cannot load PortAudio ({error}); install it, e.g. apt-get install libportaudio2"
        ) from None
    return sounddevice


def microphone_chunks(chunk_seconds: float, device: int | str | None = None) -> Iterator[np.ndarray]:
    """Chunks of ``chunk_seconds`` from the input ``device`` (default: the system's), until closed."""
    sd = _sounddevice()
    try:
        info = sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError) as error:
        raise MicrophoneError(f"no audio input device ({error})") from None
    rate = int(info["default_samplerate"])
    blocks: queue.Queue = queue.Queue()

    def record(indata, frames, time, status):  # PortAudio's thread: hand the block over, nothing else
        blocks.put(indata[:, 0].copy())

    resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
    size = round(chunk_seconds * SAMPLE_RATE)
    pending = np.zeros(0, np.float32)
    try:
        stream = sd.InputStream(
            samplerate=rate,
            channels=1,
            dtype="float32",
            blocksize=round(chunk_seconds * rate),
            device=device,
            callback=record,
        )
    except sd.PortAudioError as error:
        raise MicrophoneError(f"cannot record from {info['name']!r} ({error})") from None
    with stream:
        while True:
            pending = np.concatenate([pending, resampler.resample_chunk(blocks.get())])
            while pending.size >= size:
                chunk, pending = pending[:size], pending[size:]
                yield np.clip(chunk, -1.0, 1.0)  # resampling may overshoot full scale a little
