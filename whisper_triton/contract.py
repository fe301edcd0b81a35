"""The wire contract between clients and the Triton model repository: model and tensor names, types, shapes.

Every generated ``config.pbtxt`` is built from these specs (``build``), the Python-backend models read
and write exactly these tensors, and the client sends and parses them; a test compares the generated
configs with this module.

Clients call one model, ``whisper`` (an ensemble):
    AUDIO        FP32   [-1]  16 kHz mono PCM in [-1, 1]             (AUDIO or AUDIO_BYTES, not both)
    AUDIO_BYTES  BYTES  [1]   an encoded file (wav, flac, mp3, ogg, ...)
    OPTIONS      BYTES  [1]   optional JSON object of decoding options (see whisper_triton.options)
  ->
    TEXT         BYTES  [1, 1]  the transcript
    SEGMENTS     BYTES  [1, 1]  JSON list of {"start": s, "end": s, "text": str}

Streaming clients call ``whisper_stream`` (Triton's sequence batcher: one sequence id per stream, the
first chunk flagged START, the last END), one request per chunk and one response per request:
    AUDIO        FP32   [1, -1]  the next chunk of 16 kHz mono PCM (may be empty, e.g. with END)
    OPTIONS      BYTES  [1, 1]   optional, first chunk only: decoding options (JSON, as above)
  ->
    COMMITTED    BYTES  [1, 1]   words committed by this chunk (final: never changed or taken back)
    TENTATIVE    BYTES  [1, 1]   the current guess after the committed words (replaced by every response)
    SEGMENTS     BYTES  [1, 1]   JSON list of {"start", "end", "text", "committed"}: this response's newly
                                 committed pieces, then its tentative pieces, in seconds of stream time
    TEXT         BYTES  [1, 1]   the whole committed transcript, on the END chunk's response only
"""

from __future__ import annotations

from dataclasses import dataclass

ENSEMBLE_MODEL = "whisper"
FEATURES_MODEL = "whisper_features"
ENCODER_MODEL = "whisper_encoder"
DECODER_MODEL = "whisper_decoder"
STREAM_MODEL = "whisper_stream"
ALL_MODELS = (ENSEMBLE_MODEL, FEATURES_MODEL, ENCODER_MODEL, DECODER_MODEL, STREAM_MODEL)

AUDIO = "AUDIO"
AUDIO_BYTES = "AUDIO_BYTES"
OPTIONS = "OPTIONS"
TEXT = "TEXT"
SEGMENTS = "SEGMENTS"
INPUT_FEATURES = "INPUT_FEATURES"  # [1, windows, n_mels, 3000] log-mel windows of one request
WINDOWS = "WINDOWS"  # [1, windows, 3] start, end and last speech (seconds) of each window in the audio
ENCODER_OUTPUT = "ENCODER_OUTPUT"  # [1, windows, 1500, d_model]
DECODE_OPTIONS = "DECODE_OPTIONS"  # the validated options, as canonical JSON, passed on to decoding
WINDOW_COLUMNS = 3  # start, end, end of the last speech
COMMITTED = "COMMITTED"  # streaming: words committed by this chunk
TENTATIVE = "TENTATIVE"  # streaming: the uncommitted tail of the current hypothesis
# Triton's sequence-batcher controls of the streaming model: the server sets them from the request's
# sequence flags (clients never send them as tensors).
SEQUENCE_START = "START"
SEQUENCE_END = "END"
SEQUENCE_READY = "READY"
MAX_STREAM_CHUNK_SECONDS = 15.0  # longest chunk whisper_stream takes: half a window, so a buffer that
# must make room for it keeps at least 15 s of context


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton's config name: TYPE_FP32, TYPE_STRING, ...
    dims: tuple[int, ...]
    optional: bool = False


def ensemble_inputs() -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(AUDIO, "TYPE_FP32", (-1,), optional=True),
        TensorSpec(AUDIO_BYTES, "TYPE_STRING", (1,), optional=True),
        TensorSpec(OPTIONS, "TYPE_STRING", (1,), optional=True),
    )


# The ensemble takes no batch dimension (max_batch_size 0): one request is one audio. Its windows travel
# as a batch of one item [1, windows, ...], so the encoder's and decoder's dynamic batchers group
# concurrent requests (the encoder those with equally many windows, which short requests always have).
def ensemble_outputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec(TEXT, "TYPE_STRING", (1, 1)), TensorSpec(SEGMENTS, "TYPE_STRING", (1, 1)))


def features_outputs(n_mels: int, n_frames: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(INPUT_FEATURES, "TYPE_FP32", (1, -1, n_mels, n_frames)),
        TensorSpec(WINDOWS, "TYPE_FP32", (1, -1, WINDOW_COLUMNS)),
        TensorSpec(DECODE_OPTIONS, "TYPE_STRING", (1, 1)),
    )


def encoder_inputs(n_mels: int, n_frames: int) -> tuple[TensorSpec, ...]:
    """Per batch item; the encoder and decoder models batch requests (max_batch_size > 0)."""
    return (TensorSpec(INPUT_FEATURES, "TYPE_FP32", (-1, n_mels, n_frames)),)


def encoder_outputs(n_positions: int, d_model: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(ENCODER_OUTPUT, "TYPE_FP32", (-1, n_positions, d_model)),)


def decoder_inputs(n_positions: int, d_model: int, n_mels: int, n_frames: int) -> tuple[TensorSpec, ...]:
    """The decoder also gets the log-mel windows: a window decoded only in part is continued by encoding
    its shifted log-mel again."""
    return (
        TensorSpec(ENCODER_OUTPUT, "TYPE_FP32", (-1, n_positions, d_model)),
        TensorSpec(INPUT_FEATURES, "TYPE_FP32", (-1, n_mels, n_frames)),
        TensorSpec(WINDOWS, "TYPE_FP32", (-1, WINDOW_COLUMNS)),
        TensorSpec(DECODE_OPTIONS, "TYPE_STRING", (1,)),
    )


def decoder_outputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec(TEXT, "TYPE_STRING", (1,)), TensorSpec(SEGMENTS, "TYPE_STRING", (1,)))


# The streaming model batches chunks of different streams (max_batch_size > 0): dims are per chunk.
def stream_inputs() -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(AUDIO, "TYPE_FP32", (-1,)),
        TensorSpec(OPTIONS, "TYPE_STRING", (1,), optional=True),
    )


def stream_outputs() -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, "TYPE_STRING", (1,)) for name in (COMMITTED, TENTATIVE, SEGMENTS, TEXT))


def stream_controls() -> tuple[tuple[str, str], ...]:
    """(control input name, Triton control kind) of the streaming model's sequence batcher."""
    return (
        (SEQUENCE_START, "CONTROL_SEQUENCE_START"),
        (SEQUENCE_END, "CONTROL_SEQUENCE_END"),
        (SEQUENCE_READY, "CONTROL_SEQUENCE_READY"),
    )
