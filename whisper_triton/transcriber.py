"""Audio in, transcript out: windows -> features -> encoder -> guarded decoding -> continuation -> segments.

The Triton models run the same two stages split across models: :func:`prepare_windows` in the feature
model, :func:`decode_windows` in the decoding model (with the encoder behind a callable, a BLS call
there). :class:`Transcriber` runs both in one process: the build's verification, the benchmarks, the
PyTorch reference and the Python API use it, so every path shares one implementation.

Continuation (openai/whisper's seek, batched): a window whose decoding stops before its speech does
(Silero VAD says speech goes on for ``CONTINUE_MIN_SPEECH_SECONDS`` past the last timestamp) is decoded
again from that timestamp: its log-mel frames shifted left, encoded, and decoded conditioned on the
window's text so far. Every window that needs it goes in one batch, up to ``MAX_CONTINUATIONS`` times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from whisper_triton.constants import CHUNK_LENGTH, FRAMES_PER_SECOND, N_SAMPLES, SAMPLE_RATE, TIME_PRECISION
from whisper_triton.decoding import DecoderBackend, Segment, WindowResult, detect_languages
from whisper_triton.features import transcription_features
from whisper_triton.guards import decode_with_fallback, is_silence
from whisper_triton.manifest import ModelManifest
from whisper_triton.options import DecodingOptions
from whisper_triton.windows import speech_end, speech_windows, split_windows

CONTINUE_MIN_SPEECH_SECONDS = 1.0  # speech left after the last timestamp that is worth another pass
MAX_CONTINUATIONS = 4  # passes per window at most (each consumes at least one timestamp step)


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    language: str | None = None


def resolve_options(options: DecodingOptions, samples: int) -> DecodingOptions:
    """Options with everything left to the server decided for audio of ``samples``: timestamp tokens
    for audio over one window (openai/whisper's long-form transcription; on our 2.4-minute test 7.6% WER
    with them, 12.5% without), unless the client said ``timestamps: false``."""
    return options.for_audio(samples / SAMPLE_RATE, CHUNK_LENGTH)


def prepare_windows(
    audio: np.ndarray, n_mels: int, options: DecodingOptions, vad=None, pauses: str = "vad"
) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel features ``[W, n_mels, 3000]`` of each window and the windows ``[W, 3]``: start, end and
    where the window's last speech ends (its start when it holds none), in seconds.

    ``vad`` (a :class:`~whisper_triton.vad.SileroVad`) finds the pauses to cut at and the speech;
    without it, pauses come from frame energy and every window counts as speech to its end.
    ``options.vad_filter`` keeps only the speech regions (it needs ``vad``). ``pauses="energy"`` cuts at
    energy pauses even with a VAD (for the comparison in scripts/bench_long_form.py).
    """
    probabilities = vad.probabilities(audio) if vad is not None else None
    if options.vad_filter:
        if probabilities is None:
            raise ValueError("vad_filter needs the Silero VAD model")
        bounds = speech_windows(audio, probabilities)
        if not bounds:  # no speech at all: one empty window marks it (decode_windows skips it)
            bounds = [(0, min(audio.shape[0], N_SAMPLES))]
    else:
        bounds = split_windows(audio, probabilities if pauses == "vad" else None)
    features = transcription_features([audio[start:end] for start, end in bounds], n_mels)
    threshold = options.speech_threshold
    windows = np.array(
        [
            (
                start,
                end,
                speech_end(None if threshold is None else probabilities, start, end, threshold or 0.5),
            )
            for start, end in bounds
        ],
        dtype=np.float64,
    )
    return features, (windows / SAMPLE_RATE).astype(np.float32)


@dataclass
class _Piece:
    """One decoded stretch of a window: from ``offset`` (seconds into the window) on."""

    offset: float
    result: WindowResult


def decode_windows(
    encoder_output: np.ndarray,
    features: np.ndarray,
    windows: np.ndarray,
    options: DecodingOptions,
    backend: DecoderBackend,
    manifest: ModelManifest,
    tokenizer,
    encode: Callable[[np.ndarray], np.ndarray],
    max_rows: int | None = None,
) -> list[list[_Piece]]:
    """Decode windows (``encoder_output`` ``[W, 1500, d]`` of ``features``) with the guards, and continue
    the ones whose decoding stopped before their speech did; ``encode`` encodes shifted windows.

    ``max_rows`` bounds the decoder rows (windows x beams, or x samples at a fallback temperature) in
    one batch, and with it the self-attention cache and logits in memory: more windows are decoded in
    several batches, one after the other.
    """
    count = encoder_output.shape[0]
    durations = (windows[:, 1] - windows[:, 0]).astype(np.float64)
    speech = (windows[:, 2] - windows[:, 0]).astype(np.float64)
    pieces: list[list[_Piece]] = [[] for _ in range(count)]
    # A window where the VAD found no speech at all is not decoded (speech end = its start).
    todo = [i for i in range(count) if speech[i] > 0]
    if not todo:
        return pieces
    languages = _languages(backend, encoder_output, manifest, options, todo)
    results = decode_with_fallback(
        backend,
        encoder_output[todo],
        manifest,
        options,
        tokenizer,
        durations[todo],
        [languages[i] for i in todo],
    )
    for index, result in zip(todo, results, strict=True):
        pieces[index].append(_Piece(0.0, result))
    if not options.timestamps:
        return pieces
    for _ in range(MAX_CONTINUATIONS):
        starts = {i: _resume_point(pieces[i], options, manifest) for i in range(count) if pieces[i]}
        todo = [
            i
            for i, start in starts.items()
            if start is not None and speech[i] - start >= CONTINUE_MIN_SPEECH_SECONDS
        ]
        if not todo:
            break
        for chunk in _chunks(todo, _rows_per_window(options), max_rows):
            shifted = np.stack([_shift(features[i], starts[i]) for i in chunk])
            results = decode_with_fallback(
                backend,
                encode(shifted),
                manifest,
                options,
                tokenizer,
                np.array([durations[i] - starts[i] for i in chunk]),
                [languages[i] for i in chunk],
                [_text_tokens(pieces[i], manifest) for i in chunk],
            )
            for index, result in zip(chunk, results, strict=True):
                pieces[index].append(_Piece(starts[index], result))
    return pieces


def _rows_per_window(options: DecodingOptions) -> int:
    sampling = options.best_of if options.temperature_increment_on_fallback is not None else 1
    return max(options.beam_size, sampling)


def _chunks(indices: list[int], per_window: int, max_rows: int | None) -> list[list[int]]:
    size = len(indices) if max_rows is None else max(1, max_rows // per_window)
    return [indices[start : start + size] for start in range(0, len(indices), size)]


def _languages(backend, encoder_output, manifest, options, todo) -> list[str | None]:
    languages: list[str | None] = [options.language] * encoder_output.shape[0]
    if manifest.is_multilingual and options.language is None:
        for index, code in zip(todo, detect_languages(backend, encoder_output[todo], manifest), strict=True):
            languages[index] = code
    return languages


def _resume_point(pieces: list[_Piece], options: DecodingOptions, manifest: ModelManifest) -> float | None:
    """Where to continue a window (seconds into it), or None: the last piece gave no closed, timed text."""
    last = pieces[-1]
    if is_silence(last.result, options) or not last.result.text:
        return None
    closed = _closed_segments(last, manifest)
    if not closed or closed[-1].end < TIME_PRECISION:
        return None  # no progress to continue from
    return last.offset + closed[-1].end


def _closed_segments(piece: _Piece, manifest: ModelManifest) -> list[Segment]:
    """The piece's segments that a timestamp closed (trailing text without one is re-decoded if continued)."""
    tokens, segments = piece.result.tokens, piece.result.segments
    if not tokens or not segments or not any(t >= manifest.tokens.timestamp_begin for t in tokens):
        return []
    return segments if tokens[-1] >= manifest.tokens.timestamp_begin else segments[:-1]


def _shift(features: np.ndarray, seconds: float) -> np.ndarray:
    """The window's log-mel from ``seconds`` on, padded at the end like every window (openai/whisper's
    seek slices the mel of the whole audio the same way)."""
    frames = int(round(seconds * FRAMES_PER_SECOND))
    shifted = np.zeros_like(features)
    shifted[:, : features.shape[1] - frames] = features[:, frames:]
    return shifted


def _text_tokens(pieces: list[_Piece], manifest: ModelManifest) -> list[int]:
    return [t for piece in pieces for t in piece.result.tokens if t < manifest.tokens.eot]


def assemble(
    pieces: list[list[_Piece]], windows: np.ndarray, options: DecodingOptions, manifest: ModelManifest
) -> Transcript:
    """One transcript: segments in absolute time, clipped to their window, never overlapping; silent
    pieces give nothing; a continued piece's unclosed trailing text is dropped (its continuation
    decoded it again)."""
    segments: list[Segment] = []
    for window_pieces, (start, end, _speech) in zip(pieces, windows, strict=True):
        for position, piece in enumerate(window_pieces):
            if is_silence(piece.result, options):
                continue
            continued = position + 1 < len(window_pieces)
            kept = _closed_segments(piece, manifest) if continued else piece.result.segments
            for segment in kept:
                begin = min(float(start) + piece.offset + segment.start, float(end))
                finish = min(float(start) + piece.offset + segment.end, float(end))
                if segments and begin < segments[-1].end:  # never before the previous segment ends
                    begin = segments[-1].end
                    finish = max(finish, begin)
                language = piece.result.language if manifest.is_multilingual else None
                segments.append(Segment(begin, finish, segment.text, language))
    languages = [s.language for s in segments if s.language]
    language = max(set(languages), key=languages.count) if languages else None  # the most frequent
    return Transcript(" ".join(s.text for s in segments).strip(), segments, language)


class Transcriber:
    """Both stages in one process, over any encoder callable and decoder backend."""

    def __init__(
        self,
        encoder: Callable[[np.ndarray], np.ndarray],
        backend: DecoderBackend,
        manifest: ModelManifest,
        tokenizer,
        vad=None,
        pauses: str = "vad",
    ):
        self.encoder, self.backend, self.manifest, self.tokenizer = encoder, backend, manifest, tokenizer
        self.vad, self.pauses = vad, pauses

    def transcribe(self, audio: np.ndarray, options: DecodingOptions | None = None) -> Transcript:
        options = resolve_options(options or DecodingOptions(), len(audio))
        features, windows = prepare_windows(audio, self.manifest.n_mels, options, self.vad, self.pauses)
        pieces = decode_windows(
            self.encoder(features),
            features,
            windows,
            options,
            self.backend,
            self.manifest,
            self.tokenizer,
            self.encoder,
        )
        return assemble(pieces, windows, options, self.manifest)

    def transcribe_batch(
        self, audios: list[np.ndarray], options: DecodingOptions | None = None, batch_size: int = 16
    ) -> list[Transcript]:
        """Short clips (<= 30 s each), ``batch_size`` at a time through the encoder and the decoder
        (features, encoder states and cross K/V of a batch are held in memory at once)."""
        options = options or DecodingOptions()
        if any(len(audio) > N_SAMPLES for audio in audios):
            raise ValueError("transcribe_batch takes clips of at most 30 s; use transcribe for longer audio")
        options = resolve_options(options, 0)
        transcripts: list[Transcript] = []
        for start in range(0, len(audios), batch_size):
            transcripts += self._short_batch(audios[start : start + batch_size], options)
        return transcripts

    def _short_batch(self, audios: list[np.ndarray], options: DecodingOptions) -> list[Transcript]:
        features = transcription_features(audios, self.manifest.n_mels)
        ends = [len(a) / SAMPLE_RATE for a in audios]
        threshold = options.speech_threshold
        speech = [
            speech_end(self.vad.probabilities(a), 0, len(a), threshold) / SAMPLE_RATE
            if self.vad is not None and threshold is not None
            else end
            for a, end in zip(audios, ends, strict=True)
        ]
        windows = np.array([(0.0, end, s) for end, s in zip(ends, speech, strict=True)], dtype=np.float32)
        pieces = decode_windows(
            self.encoder(features),
            features,
            windows,
            options,
            self.backend,
            self.manifest,
            self.tokenizer,
            self.encoder,
        )
        return [assemble([p], windows[i : i + 1], options, self.manifest) for i, p in enumerate(pieces)]
