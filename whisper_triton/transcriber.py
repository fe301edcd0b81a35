"""Audio in, transcript out: windows -> features -> encoder -> guarded decoding -> continuation -> segments.

The Triton models run the same two stages split across models: :func:`prepare_windows` in the feature
model, :meth:`Transcriber.decode_windows` in the decoding model (with the encoder behind a callable, a BLS call
there). :class:`Transcriber` runs both in one process: the build's verification, the benchmarks, the
PyTorch reference and the Python API use it, so every path shares one implementation; the decoding model
runs :meth:`Transcriber.decode_windows` of one too, with its encoder a BLS call.

Continuation (openai/whisper's seek, batched): a window whose decoding stops before its speech does
(Silero VAD says speech goes on for ``CONTINUE_MIN_SPEECH_SECONDS`` past the last timestamp) is decoded
again from that timestamp: its log-mel frames shifted left, encoded, and decoded conditioned on the
window's text so far. Every window that needs it goes in one batch, up to ``MAX_CONTINUATIONS`` times.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from whisper_triton.constants import CHUNK_LENGTH, FRAMES_PER_SECOND, N_SAMPLES, SAMPLE_RATE, TIME_PRECISION
from whisper_triton.decoding import Decoder, WindowContext
from whisper_triton.errors import ClientError
from whisper_triton.features import transcription_features
from whisper_triton.guards import is_silence
from whisper_triton.manifest import ModelManifest
from whisper_triton.options import DecodingOptions
from whisper_triton.results import DecodedPiece, Segment, Transcript
from whisper_triton.windows import Windows, speech_end, speech_windows, split_windows

CONTINUE_MIN_SPEECH_SECONDS = 1.0  # speech left after the last timestamp that is worth another pass
MAX_CONTINUATIONS = 4  # passes per window at most (each consumes at least one timestamp step)
Encoder = Callable[[np.ndarray], np.ndarray]  # log-mel windows [W, n_mels, 3000] -> states [W, 1500, d]


class VadUnavailable(ClientError, ValueError):
    """An option that needs the Silero VAD model, where there is none (a ``ValueError`` for Python
    callers, a ``ClientError`` for servers)."""


def resolve_options(options: DecodingOptions, samples: int) -> DecodingOptions:
    """Options with everything left to the server decided for audio of ``samples``: timestamp tokens
    for audio over one window (openai/whisper's long-form transcription; on our 2.4-minute test 7.6% WER
    with them, 12.5% without), unless the client said ``timestamps: false``."""
    return options.for_audio(samples / SAMPLE_RATE, CHUNK_LENGTH)


def prepare_windows(
    audio: np.ndarray, n_mels: int, options: DecodingOptions, vad=None, pauses: str = "vad"
) -> tuple[np.ndarray, Windows]:
    """Log-mel features ``[W, n_mels, 3000]`` of each window, and the windows.

    ``vad`` (a :class:`~whisper_triton.vad.SileroVad`) finds the pauses to cut at and the speech;
    without it, pauses come from frame energy and every window counts as speech to its end.
    ``options.vad_filter`` keeps only the speech regions (it needs ``vad``). ``pauses="energy"`` cuts at
    energy pauses even with a VAD (for the comparison in scripts/bench_long_form.py).
    """
    probabilities = vad.probabilities(audio) if vad is not None else None
    if options.vad_filter:
        if probabilities is None:
            raise VadUnavailable("vad_filter needs the Silero VAD model, and none was given")
        bounds = speech_windows(audio, probabilities)
        if not bounds:  # no speech at all: one empty window marks it (decode_windows skips it)
            bounds = [(0, min(audio.shape[0], N_SAMPLES))]
    else:
        bounds = split_windows(audio, probabilities if pauses == "vad" else None)
    features = transcription_features([audio[start:end] for start, end in bounds], n_mels)
    threshold = options.speech_threshold
    # Without a threshold (or a VAD) every window counts as speech to its end.
    scores = None if threshold is None else probabilities
    ends = [speech_end(scores, start, end, threshold) for start, end in bounds]
    seconds = (
        np.array([(start, end, speech) for (start, end), speech in zip(bounds, ends, strict=True)])
        / SAMPLE_RATE
    )
    # float32 as on the wire, so that in-process and served transcripts time their segments alike.
    return features, Windows.from_array(seconds.astype(np.float32))


def assemble(
    pieces: list[list[DecodedPiece]], windows: Windows, options: DecodingOptions, manifest: ModelManifest
) -> Transcript:
    """One transcript: segments in absolute time, clipped to their window, never overlapping; silent
    pieces give nothing; a continued piece's unclosed trailing text is dropped (its continuation
    decoded it again)."""
    segments: list[Segment] = []
    for window_pieces, start, end in zip(pieces, windows.start, windows.end, strict=True):
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
    """Both stages over an encoder callable and a :class:`~whisper_triton.decoding.Decoder`.

    ``vad`` (a :class:`~whisper_triton.vad.SileroVad`) finds pauses and speech; ``pauses="energy"`` cuts
    long audio at energy pauses even with a VAD. ``max_rows`` bounds the decoder rows (windows x beams,
    or x samples at a fallback temperature) of one batch, and with it the self-attention cache and
    logits in memory: more windows are decoded in several batches, one after the other.
    """

    def __init__(
        self, encoder: Encoder, decoder: Decoder, vad=None, pauses: str = "vad", max_rows: int | None = None
    ):
        self.encoder, self.decoder, self.vad, self.pauses, self.max_rows = (
            encoder,
            decoder,
            vad,
            pauses,
            max_rows,
        )

    @property
    def manifest(self) -> ModelManifest:
        return self.decoder.manifest

    def transcribe(self, audio: np.ndarray, options: DecodingOptions | None = None) -> Transcript:
        options = resolve_options(options or DecodingOptions(), len(audio))
        features, windows = prepare_windows(audio, self.manifest.n_mels, options, self.vad, self.pauses)
        pieces = self.decode_windows(self.encoder(features), features, windows, options)
        return assemble(pieces, windows, options, self.manifest)

    def transcribe_batch(
        self, audios: list[np.ndarray], options: DecodingOptions | None = None, batch_size: int = 16
    ) -> list[Transcript]:
        """Short clips (<= 30 s each), ``batch_size`` at a time through the encoder and the decoder
        (features, encoder states and cross K/V of a batch are held in memory at once)."""
        if any(len(audio) > N_SAMPLES for audio in audios):
            raise ValueError(
                f"transcribe_batch takes clips of at most {CHUNK_LENGTH} s; use transcribe for longer audio"
            )
        options = resolve_options(options or DecodingOptions(), 0)
        transcripts: list[Transcript] = []
        for start in range(0, len(audios), batch_size):
            transcripts += self._short_batch(audios[start : start + batch_size], options)
        return transcripts

    def _short_batch(self, audios: list[np.ndarray], options: DecodingOptions) -> list[Transcript]:
        features = transcription_features(audios, self.manifest.n_mels)
        threshold = options.speech_threshold
        speech = [
            speech_end(self.vad.probabilities(a), 0, len(a), threshold)
            if self.vad is not None and threshold is not None
            else len(a)
            for a in audios
        ]
        seconds = [
            (0.0, len(a) / SAMPLE_RATE, end / SAMPLE_RATE) for a, end in zip(audios, speech, strict=True)
        ]
        windows = Windows.from_array(np.array(seconds, dtype=np.float32))
        pieces = self.decode_windows(self.encoder(features), features, windows, options)
        return [assemble([p], windows[i : i + 1], options, self.manifest) for i, p in enumerate(pieces)]

    def decode_windows(
        self, encoder_output: np.ndarray, features: np.ndarray, windows: Windows, options: DecodingOptions
    ) -> list[list[DecodedPiece]]:
        """Decode windows (``encoder_output`` ``[W, 1500, d]`` of ``features``) with the guards, and continue
        the ones whose decoding stopped before their speech did (their shifted log-mel goes through the
        encoder again). Windows without speech are not decoded: they get no pieces."""
        count = encoder_output.shape[0]
        durations, speech = windows.duration, windows.speech
        pieces: list[list[DecodedPiece]] = [[] for _ in range(count)]
        todo = [int(i) for i in np.flatnonzero(windows.has_speech)]
        if not todo:
            return pieces
        languages: list[str | None] = [options.language] * count
        for chunk in _chunks(todo, _rows_per_window(options), self.max_rows):
            if self.manifest.is_multilingual and options.language is None:  # detected per window
                for index, code in zip(
                    chunk, self.decoder.detect_languages(encoder_output[chunk]), strict=True
                ):
                    languages[index] = code
            contexts = [WindowContext(float(durations[i]), languages[i]) for i in chunk]
            results = self.decoder.decode_with_fallback(encoder_output[chunk], options, contexts)
            for index, result in zip(chunk, results, strict=True):
                pieces[index].append(DecodedPiece(0.0, result))
        if not options.timestamps:
            return pieces
        for _ in range(MAX_CONTINUATIONS):
            starts = {i: _resume_point(pieces[i], options, self.manifest) for i in range(count) if pieces[i]}
            todo = [
                i
                for i, start in starts.items()
                if start is not None and speech[i] - start >= CONTINUE_MIN_SPEECH_SECONDS
            ]
            if not todo:
                break
            for chunk in _chunks(todo, _rows_per_window(options), self.max_rows):
                shifted = np.stack([_shift(features[i], starts[i]) for i in chunk])
                contexts = [
                    WindowContext(
                        float(durations[i] - starts[i]), languages[i], _text_tokens(pieces[i], self.manifest)
                    )
                    for i in chunk
                ]
                results = self.decoder.decode_with_fallback(self.encoder(shifted), options, contexts)
                for index, result in zip(chunk, results, strict=True):
                    pieces[index].append(DecodedPiece(starts[index], result))
        return pieces


def _rows_per_window(options: DecodingOptions) -> int:
    sampling = options.best_of if options.temperature_increment_on_fallback is not None else 1
    return max(options.beam_size, sampling)


def _chunks(indices: list[int], per_window: int, max_rows: int | None) -> list[list[int]]:
    size = len(indices) if max_rows is None else max(1, max_rows // per_window)
    return [indices[start : start + size] for start in range(0, len(indices), size)]


def _resume_point(
    pieces: list[DecodedPiece], options: DecodingOptions, manifest: ModelManifest
) -> float | None:
    """Where to continue a window (seconds into it), or None: the last piece gave no closed, timed text."""
    last = pieces[-1]
    if is_silence(last.result, options) or not last.result.text:
        return None
    closed = _closed_segments(last, manifest)
    if not closed or closed[-1].end < TIME_PRECISION:
        return None  # no progress to continue from
    return last.offset + closed[-1].end


def _closed_segments(piece: DecodedPiece, manifest: ModelManifest) -> list[Segment]:
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


def _text_tokens(pieces: list[DecodedPiece], manifest: ModelManifest) -> tuple[int, ...]:
    return tuple(t for piece in pieces for t in piece.result.tokens if t < manifest.tokens.eot)
