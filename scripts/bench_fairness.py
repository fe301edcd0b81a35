"""Can one long request monopolise the server? Latency of short requests sent while a 2-minute request
at beam 5 is being decoded, with one decoding-model instance and with two.

    .venv/bin/python scripts/bench_fairness.py      # table + JSON (artifacts/fairness.json)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from whisper_triton.paths import cache_dir  # noqa: E402


def main() -> int:
    import tritonclient.grpc as grpcclient

    from tests.test_serving import infer
    from whisper_triton.audio import load_audio
    from whisper_triton.build.repository import build_model_repository
    from whisper_triton.build.triton_config import ServingSettings
    from whisper_triton.corpus import concatenate_utterances, read_manifest, synthesize_corpus
    from whisper_triton.server.launcher import TritonServer

    entries = read_manifest(synthesize_corpus(cache_dir("test-corpus"), num_utterances=40, seed=0))
    long_audio, _ = concatenate_utterances(entries, gap_seconds=0.3)
    short = [load_audio(entry["audio_filepath"]) for entry in entries[:5]]
    rows = []
    for instances in (1, 2):
        repository = cache_dir(f"fairness-repository-{instances}")
        build_model_repository("tiny.en", repository, settings=ServingSettings(decoder_instances=instances))
        with TritonServer(repository, log_path=cache_dir(f"fairness-{instances}.log")) as server:
            client = grpcclient.InferenceServerClient(server.url_grpc)
            infer(client, short[0])
            idle = []
            for audio in short:
                started = time.perf_counter()
                infer(client, audio)
                idle.append(time.perf_counter() - started)
            long_done = {}

            def long_request(long_done=long_done, server=server):
                started = time.perf_counter()
                infer(grpcclient.InferenceServerClient(server.url_grpc), long_audio, {"beam_size": 5})
                long_done["seconds"] = time.perf_counter() - started

            worker = threading.Thread(target=long_request)
            worker.start()
            time.sleep(3)  # the long request is decoding now
            busy = []

            def timed(audio, busy=busy, server=server):
                started = time.perf_counter()
                infer(grpcclient.InferenceServerClient(server.url_grpc), audio)
                busy.append(time.perf_counter() - started)

            shorts = [threading.Thread(target=timed, args=(audio,)) for audio in short]
            for thread in shorts:  # all five while the long one decodes
                thread.start()
            for thread in shorts + [worker]:
                thread.join()
        rows.append(
            {
                "decoder_instances": instances,
                "short_idle_ms": 1000 * float(np.median(idle)),
                "short_behind_long_ms": 1000 * float(np.median(busy)),
                "long_request_s": long_done["seconds"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nshort requests (median of 5) while a {len(long_audio) / 16000:.0f}-s beam-5 request decodes\n")
    print("| decoder instances | short, idle server | short, behind the long one | the long one |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['decoder_instances']} | {row['short_idle_ms']:.0f} ms | {row['short_behind_long_ms']:.0f} ms "
            f"| {row['long_request_s']:.1f} s |"
        )
    output = REPO / "artifacts" / "fairness.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
