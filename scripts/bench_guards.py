"""Do the guards cost anything on speech? WER with openai's guards and the VAD gate on (the defaults) and
all off, on the 40-utterance test corpus and 400 held-out utterances; greedy, fp32 ONNX, in-process.

    .venv/bin/python scripts/bench_guards.py      # table + JSON (artifacts/guards.json)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from whisper_triton.paths import cache_dir  # noqa: E402

OFF = {
    "speech_threshold": None,
    "no_speech_threshold": None,
    "logprob_threshold": None,
    "compression_ratio_threshold": None,
    "temperature_increment_on_fallback": None,
}


def main() -> int:
    from training.metrics import compute_wer
    from whisper_triton.audio import load_audio
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.corpus import read_manifest, synthesize_corpus
    from whisper_triton.onnx_runtime import repository_transcriber
    from whisper_triton.options import DecodingOptions
    from whisper_triton.vad import SileroVad

    repository = cache_dir("bench-repository-fp32")
    if not (repository / "whisper_decoder" / "1" / "decoder.onnx").is_file():
        build_model_repository("tiny.en", repository)
    transcriber = repository_transcriber(repository, vad=SileroVad())
    corpora = {
        "test corpus (40)": read_manifest(
            synthesize_corpus(cache_dir("test-corpus"), num_utterances=40, seed=0)
        ),
        "held-out (400)": read_manifest(
            synthesize_corpus(cache_dir("int8-gate-corpus"), num_utterances=400, seed=31)
        ),
    }
    rows = []
    for corpus, entries in corpora.items():
        audios = [load_audio(entry["audio_filepath"]) for entry in entries]
        truth = [entry["text"] for entry in entries]
        for label, options in (
            ("guards on (default)", DecodingOptions()),
            ("guards off", DecodingOptions(**OFF)),
        ):
            started = time.perf_counter()
            texts = [t.text for t in transcriber.transcribe_batch(audios, options)]
            rows.append(
                {
                    "corpus": corpus,
                    "guards": label,
                    "wer": compute_wer(texts, truth),
                    "empty": sum(not t for t in texts),
                    "seconds": time.perf_counter() - started,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print("\n| utterances | guards | WER % | empty transcripts |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['corpus']} | {row['guards']} | {100 * row['wer']:.2f} | {row['empty']} |")
    output = REPO / "artifacts" / "guards.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
