"""The client against a real tritonserver: batches with bad inputs over gRPC and HTTP, a batch killed and
resumed, HTTP timeouts, `whisper-triton eval`, and the client, streaming and admin examples of README.md
and docs/ (found by name through tests/doc_snippets.py)."""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CORPUS_DIR
from tests.doc_snippets import doc_snippet
from whisper_triton.client.api import WhisperClient
from whisper_triton.metrics import compute_wer

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "whisper-triton")


def _url(server, protocol):
    return server.url_grpc if protocol == "grpc" else server.url_http


@pytest.fixture
def bad_files(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    return {"missing": tmp_path / "missing.mp3", "corrupt": corrupt, "empty": empty}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_batch_of_good_and_bad_files(server, corpus_entries, bad_files, protocol):
    """Bad inputs come back as errors in their place; good ones are transcribed exactly as one request
    each would be (several workers in flight: HTTP too, one connection per worker thread)."""
    good = [Path(entry["audio_filepath"]) for entry in corpus_entries[:4]]
    inputs = [
        good[0],
        bad_files["missing"],
        good[1],
        bad_files["corrupt"],
        good[2],
        bad_files["empty"],
        good[3],
    ]
    client = WhisperClient(_url(server, protocol), protocol=protocol, timeout_s=120)
    results = client.transcribe_many(inputs, concurrency=3)
    assert [r.index for r in results] == list(range(len(inputs)))
    assert [r.input for r in results] == inputs
    errors = {r.input: r.error for r in results if not r.ok}
    assert set(errors) == set(bad_files.values())
    assert "No such file" in errors[bad_files["missing"]]
    assert "cannot decode" in errors[bad_files["corrupt"]]
    assert "empty" in errors[bad_files["empty"]]
    single = [client.transcribe(path).text for path in good]
    assert [r.transcription.text for r in results if r.ok] == single
    assert compute_wer(single, [entry["text"] for entry in corpus_entries[:4]]) <= 0.25


def test_http_client_honours_its_timeout(server, corpus_audio):
    slow = np.concatenate(corpus_audio[:8]).astype(np.float32)  # well over a second of decoding
    client = WhisperClient(server.url_http, protocol="http", timeout_s=0.05)
    started = time.perf_counter()
    result = client.transcribe_many([slow], concurrency=1)[0]
    assert not result.ok and "timed out" in result.error.lower()
    assert time.perf_counter() - started < 5


def _job_inputs(tmp_path, corpus_entries, count=10) -> Path:
    """``count`` corpus files in a folder tree (nested, to exercise the recursive search), one bad file."""
    folder = tmp_path / "recordings"
    for index, entry in enumerate(corpus_entries[:count]):
        target = folder / ("a" if index % 2 else "b") / f"clip{index:02d}.flac"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(entry["audio_filepath"], target)
    (folder / "notes.txt").write_text("not audio: never picked up")
    (folder / "b" / "broken.wav").write_bytes(b"not a wave file")
    return folder


def _results(mode, output: Path) -> list[str]:
    """The ids of the results written so far."""
    if mode == "jsonl":
        if not output.exists():
            return []
        return [json.loads(line)["id"] for line in output.read_text().splitlines()]
    return sorted(str(path) for path in output.rglob("*.txt")) if output.exists() else []


@pytest.mark.parametrize("mode", ["jsonl", "output-dir"])
def test_a_killed_batch_resumes_without_losing_or_repeating_anything(server, corpus_entries, tmp_path, mode):
    folder = _job_inputs(tmp_path, corpus_entries)
    output = tmp_path / ("out.jsonl" if mode == "jsonl" else "transcripts")
    command = [CLI, "transcribe", str(folder), "--url", server.url_grpc, "--concurrency", "1"]
    command += ["--jsonl", str(output)] if mode == "jsonl" else ["--output-dir", str(output)]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_results(mode, output)) < 3 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = _results(mode, output)
    assert 3 <= len(before) < 10, "killed in the middle of the batch"
    first_lines = output.read_text().splitlines() if mode == "jsonl" else None

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stderr  # the broken file fails (again), nothing else
    assert f"{len(before)} of 11 inputs already done: skipped" in rerun.stderr
    assert "broken.wav" in rerun.stderr and "notes.txt" not in rerun.stderr
    after = _results(mode, output)
    assert len(after) == len(set(after)) == 10  # every good file once
    if mode == "jsonl":
        lines = output.read_text().splitlines()
        assert lines[: len(first_lines)] == first_lines  # what was written stays as it was
        texts = {record["id"]: record["text"] for record in map(json.loads, lines)}
        assert set(texts) == {str(path) for path in folder.rglob("clip*.flac")}
    else:
        assert not list(output.rglob("*.partial")), "no temporary file is left"
        texts = {str(path): path.read_text().strip() for path in output.rglob("*.txt")}
        assert {Path(key).relative_to(output).with_suffix("") for key in texts} == {
            path.relative_to(folder).with_suffix("") for path in folder.rglob("clip*.flac")
        }
    truth = {f"clip{i:02d}": entry["text"] for i, entry in enumerate(corpus_entries[:10])}
    ordered = sorted(texts)
    assert compute_wer([texts[k] for k in ordered], [truth[Path(k).stem] for k in ordered]) <= 0.2

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "10 of 11 inputs already done" in again.stderr and _results(mode, output) == after


def test_transcribe_cli_writes_subtitles_over_http(server, corpus_entries, tmp_path):
    files = [entry["audio_filepath"] for entry in corpus_entries[:2]]
    result = subprocess.run(
        [CLI, "transcribe", *files, "--url", server.url_http, "--protocol", "http", "--format", "srt"]
        + ["--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for file in files:
        srt = (tmp_path / Path(file).with_suffix(".srt").name).read_text()
        assert re.match(r"1\n00:00:00,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt), srt


def test_eval_scores_the_server_on_the_corpus(server, corpus_entries, tmp_path):
    output = tmp_path / "eval"
    result = subprocess.run(
        [CLI, "eval", "--data", str(CORPUS_DIR), "--output", str(output), "--url", server.url_grpc],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    with open(output / "per_utterance.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(corpus_entries) == metrics["num_utterances"]
    predictions = {row["id"]: row["prediction"] for row in rows}
    references = {row["id"]: row["reference"] for row in rows}
    # The scores are those of the served transcripts, and the served transcripts are the server's.
    assert metrics["wer"] == pytest.approx(compute_wer(list(predictions.values()), list(references.values())))
    some = corpus_entries[5]
    served = WhisperClient(server.url_grpc).transcribe(some["audio_filepath"]).text
    assert predictions[Path(some["audio_filepath"]).stem] == served
    assert 0 < metrics["wer"] < 0.2
    serving = metrics["serving"]
    total = sum(entry["duration"] for entry in corpus_entries)
    assert serving["audio_seconds"] == pytest.approx(total, rel=1e-3)
    assert 0 < serving["rtf"] < 1 and not serving["failed"]
    report = (output / "report.md").read_text()
    assert "## Serving" in report and f"{serving['rtf']:.3f}" in report
    assert (output / "wer_by_length.png").stat().st_size > 0
    assert f"WER {metrics['wer']:.2%}" in result.stdout


def test_eval_reads_a_csv_manifest(server, corpus_entries, tmp_path):
    manifest = tmp_path / "set.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "text"])
        for entry in corpus_entries[:3]:
            writer.writerow([entry["audio_filepath"], entry["text"]])
    result = subprocess.run(
        [CLI, "eval", "--data", str(manifest), "--output", str(tmp_path / "out"), "--url", server.url_grpc],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["num_utterances"] == 3


# ---- the documentation's examples, run as written against the test server ----


@pytest.fixture
def example_files(tmp_path, corpus_entries, monkeypatch):
    """The files the examples name, made of corpus speech, in a fresh working directory."""
    from whisper_triton.corpus import concatenate_utterances

    monkeypatch.chdir(tmp_path)
    for name, entry in (("a.wav", 0), ("b.flac", 1)):
        shutil.copy2(
            corpus_entries[entry]["audio_filepath"], tmp_path / name
        )  # FLAC named .wav: the server sniffs
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for entry in corpus_entries[2:5]:
        shutil.copy2(entry["audio_filepath"], recordings / Path(entry["audio_filepath"]).name)
    import soundfile

    audio, text = concatenate_utterances(corpus_entries[5:8])
    soundfile.write(tmp_path / "talk.wav", audio, 16000)
    return tmp_path, text


def _with_server(code: str, server) -> str:
    assert "localhost:8001" in code
    return code.replace("localhost:8001", server.url_grpc)


def _run_snippet(name: str, server) -> None:
    block = doc_snippet(name)
    exec(compile(_with_server(block.code, server), block.where, "exec"), {})  # noqa: S102 - our own docs' code


def test_docs_python_client_examples(server, example_files, corpus_entries, capsys):
    _, talk_text = example_files
    _run_snippet("serving-client", server)
    segments = ast.literal_eval(capsys.readouterr().out.strip())  # a.wav: the first corpus utterance
    assert segments and all(0 <= segment["start"] <= segment["end"] for segment in segments)
    assert compute_wer(" ".join(segment["text"] for segment in segments), corpus_entries[0]["text"]) <= 0.5
    _run_snippet("client-batch", server)
    _run_snippet("stream-python", server)
    out = capsys.readouterr().out
    assert "missing.mp3" in out and "No such file" in out
    final = out.strip().splitlines()[-1]
    assert compute_wer(final, talk_text) <= 0.25


def test_docs_admin_key_example(server, monkeypatch, capsys):
    """docs/serving.md's admin calls, each protocol with its own form of the header, with the server's key."""
    block = doc_snippet("admin-key")
    code = _with_server(block.code, server).replace("localhost:8000", server.url_http)
    monkeypatch.setenv("WHISPER_TRITON_ADMIN_KEY", server.admin_key)
    exec(compile(code, block.where, "exec"), {})  # noqa: S102 - our own documentation's code
    assert capsys.readouterr().out.count("whisper_decoder") == 2  # both indexes list the models
    # As the page says, each protocol takes only its own form of the header.
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from whisper_triton.server.launcher import ADMIN_HEADER

    with pytest.raises(InferenceServerException, match="triton-grpc-protocol-whisper-triton-admin-key"):
        grpcclient.InferenceServerClient(server.url_grpc).get_model_repository_index(
            headers={ADMIN_HEADER: server.admin_key}
        )
    with pytest.raises(InferenceServerException, match="restricted"):
        httpclient.InferenceServerClient(server.url_http).get_model_repository_index(
            headers={f"triton-grpc-protocol-{ADMIN_HEADER}": server.admin_key}
        )


def _librispeech_subset(folder: Path, entries: list[dict]) -> Path:
    """``entries`` of the test corpus as a LibriSpeech split: speaker/chapter/ID.flac and the chapter's
    transcript file."""
    for entry in entries:
        speaker, chapter, _ = entry["id"].split("-")
        chapter_dir = folder / speaker / chapter
        chapter_dir.mkdir(parents=True, exist_ok=True)
        (chapter_dir / f"{entry['id']}.flac").symlink_to(entry["audio_filepath"])
        source = Path(entry["audio_filepath"]).parent / f"{speaker}-{chapter}.trans.txt"
        line = next(line for line in source.read_text().splitlines() if line.startswith(entry["id"] + " "))
        with (chapter_dir / f"{speaker}-{chapter}.trans.txt").open("a", encoding="utf-8") as trans:
            trans.write(line + "\n")
    return folder


def test_docs_client_commands(server, example_files, corpus_entries):
    """Every command of docs/client.md's block, with the test server's address and, for its test-clean,
    a few corpus utterances as a LibriSpeech split (test_eval_scores_the_server_on_the_corpus scores the
    whole corpus)."""
    workdir, talk_text = example_files
    test_clean = _librispeech_subset(workdir / "LibriSpeech" / "test-clean", corpus_entries[8:11])
    block = doc_snippet("client-commands").code
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    commands = [c for c in commands if c.startswith("whisper-triton") and "--mic" not in c]
    assert len(commands) >= 4
    env = {**os.environ, "PATH": f"{Path(CLI).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        command = command.replace("/data/LibriSpeech/test-clean", str(test_clean))
        command += f" --url {server.url_grpc}"
        result = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=600, env=env, cwd=workdir
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        if command.startswith("whisper-triton stream talk.wav"):
            assert compute_wer(result.stdout.strip(), talk_text) <= 0.25
    assert len(list((workdir / "transcripts").glob("*.srt"))) == 3
    assert len((workdir / "transcripts.jsonl").read_text().splitlines()) == 3
    assert (workdir / "eval-test-clean" / "report.md").is_file()
