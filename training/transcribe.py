"""In-process transcription with the PyTorch (transformers) model: what the server does, in one process.

``transcribe_audio`` decodes exactly as the Triton models do (``whisper_triton.transcriber``: Silero VAD
windows for audio of any length, openai/whisper's guards with temperature fallback, continuation, the
same options), over transformers' model instead of the exported graphs. It is the path every faster
one (ONNX, quantised, Triton, streaming) is measured against.

    python -m training.transcribe a.wav b.flac              # any audio files, any length
    python -m training.transcribe --corpus DIR --num 6      # synthesise sentences, transcribe, score
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from whisper_triton.audio import load_audio
from whisper_triton.constants import N_SAMPLES, SAMPLE_RATE
from whisper_triton.options import MAX_NEW_TOKENS, DecodingOptions, OptionsError


def transcriber(model, processor):
    """The in-process ``Transcriber`` for ``model``: ``.transcribe(audio, DecodingOptions(...))`` gives a
    ``Transcript`` (text, timed segments, language) for audio of any length, as the server would."""
    from training.torch_backend import torch_transcriber
    from whisper_triton.vad import SileroVad

    return torch_transcriber(model, processor, vad=SileroVad())


def transcribe_audio(
    model,
    processor,
    audios: Sequence[np.ndarray],
    num_beams: int = 1,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    **options,
) -> list[str]:
    """Transcripts of 16 kHz mono float32 ``audios`` of any length, in input order.

    Clips of up to 30 s are decoded ``batch_size`` at a time; longer ones are cut into windows at pauses
    (nothing is truncated). ``options`` are any other ``DecodingOptions`` fields (``temperature``,
    ``initial_prompt``, ``repetition_penalty``, ...).
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    try:
        decoding = DecodingOptions(
            beam_size=num_beams, max_new_tokens=max_new_tokens or MAX_NEW_TOKENS, **options
        )
    except (OptionsError, TypeError) as error:
        raise ValueError(f"transcribe_audio: {error}") from error
    engine = transcriber(model, processor)
    texts: list[str | None] = [None] * len(audios)
    short = [i for i, audio in enumerate(audios) if len(audio) <= N_SAMPLES]
    for start in range(0, len(short), batch_size):
        batch = short[start : start + batch_size]
        for index, transcript in zip(
            batch, engine.transcribe_batch([audios[i] for i in batch], decoding), strict=True
        ):
            texts[index] = transcript.text
    for index, audio in enumerate(audios):
        if texts[index] is None:
            texts[index] = engine.transcribe(audio, decoding).text
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.transcribe",
        description="Transcribe audio with the PyTorch reference model (greedy or beam search).",
    )
    parser.add_argument("files", nargs="*", help="audio files (wav, flac, mp3, ogg, ...)")
    parser.add_argument(
        "--model", default="tiny.en", help="model name or directory (default: tiny.en, bundled)"
    )
    parser.add_argument("--corpus", help="synthesise a test corpus into this directory and transcribe it")
    parser.add_argument(
        "--num", type=int, default=6, help="utterances to synthesise with --corpus (default 6)"
    )
    parser.add_argument("--beam-size", type=int, default=1, help="1 = greedy (default), >1 = beam search")
    args = parser.parse_args(argv)
    if not args.files and not args.corpus:
        parser.error("give audio files or --corpus DIR")

    try:
        return _transcribe_files(args)
    except (ValueError, OSError) as error:
        # Missing or undecodable audio (AudioError), an unknown model (ModelLoadError), a bad option:
        # one line naming the problem, no traceback.
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def _transcribe_files(args: argparse.Namespace) -> int:
    from training.metrics import compute_wer
    from training.modeling import create_whisper_model_and_processor
    from whisper_triton.corpus import read_manifest, synthesize_corpus

    if args.beam_size < 1:
        raise ValueError(f"--beam-size must be >= 1, got {args.beam_size}")
    references: list[str | None] = []
    paths: list[Path] = [Path(f) for f in args.files]
    references += [None] * len(paths)
    if args.corpus:
        entries = read_manifest(synthesize_corpus(args.corpus, num_utterances=args.num))
        paths += [Path(entry["audio_filepath"]) for entry in entries]
        references += [entry["text"] for entry in entries]

    audios = [load_audio(path) for path in paths]  # before the model loads: a bad file fails at once
    model, processor = create_whisper_model_and_processor(args.model)
    started = time.perf_counter()
    texts = transcribe_audio(model, processor, audios, num_beams=args.beam_size)
    elapsed = time.perf_counter() - started
    for path, text, reference in zip(paths, texts, references, strict=True):
        print(f"{path.name}: {text}")
        if reference is not None:
            print(f"{'':>{len(path.name)}}  reference: {reference}")
    audio_seconds = sum(len(audio) for audio in audios) / SAMPLE_RATE
    print(
        f"\n{len(audios)} files, {audio_seconds:.1f} s of audio in {elapsed:.1f} s (RTF {elapsed / audio_seconds:.3f})"
    )
    scored = [(text, ref) for text, ref in zip(texts, references, strict=True) if ref is not None]
    if scored:
        hyps, refs = zip(*scored, strict=True)
        print(f"WER on the synthesised sentences: {100 * compute_wer(list(hyps), list(refs)):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
