"""make demo: build tiny.en into model_repository/, start tritonserver, transcribe speech over gRPC.

First two real recordings (tests/data: JFK's inaugural address and a telephone call, sent as files),
then six synthesised sentences (Piper and espeak-ng); the demo needs nothing but this repository.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    sys.path.insert(0, str(REPO))
    from training.metrics import compute_wer
    from whisper_triton.audio import load_audio
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.client.api import WhisperClient
    from whisper_triton.corpus import read_manifest, synthesize_corpus
    from whisper_triton.paths import cache_dir
    from whisper_triton.server.launcher import TritonServer

    entries = read_manifest(synthesize_corpus(cache_dir("demo-corpus"), num_utterances=6, seed=7))
    print("building tiny.en into model_repository/ ...", flush=True)
    result = build_model_repository("tiny.en", REPO / "model_repository")
    print(f"  {result.report.summary()}")
    with TritonServer(REPO / "model_repository", log_path=cache_dir("demo-server.log")) as server:
        print(f"tritonserver ready: gRPC {server.url_grpc}, HTTP {server.url_http}\n", flush=True)
        client = WhisperClient(server.url_grpc)
        for name in ("jfk", "telephone-conversation"):
            recording = REPO / "tests" / "data" / f"{name}.flac"
            t0 = time.perf_counter()
            text = client.transcribe(recording).text  # sent as the file itself; the server decodes it
            print(f"{recording.name} ({time.perf_counter() - t0:.2f} s): {text}")
            print(f"{'what was said':>22}: {(recording.with_suffix('.txt')).read_text().strip()}\n")
        hypotheses, audio_seconds, started = [], 0.0, time.perf_counter()
        for entry in entries:
            audio = load_audio(entry["audio_filepath"])
            audio_seconds += len(audio) / 16000
            t0 = time.perf_counter()
            text = client.transcribe(audio).text
            hypotheses.append(text)
            print(f"{Path(entry['audio_filepath']).name} ({time.perf_counter() - t0:.2f} s): {text}")
            print(f"{'reference':>22}: {entry['text']}")
        elapsed = time.perf_counter() - started
    wer = compute_wer(hypotheses, [entry["text"] for entry in entries])
    print(
        f"\n{len(entries)} requests, {audio_seconds:.1f} s of audio in {elapsed:.1f} s (RTF {elapsed / audio_seconds:.3f}), WER {100 * wer:.1f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
