"""``python -m training``: help, configuration merging, mistakes, and a small train + evaluate run.

The train + evaluate run goes through ``python -m training`` in subprocesses, as a user runs it (and one
mistake through ``python -m training.transcribe``); the rest calls the same ``main(argv)`` in-process,
which saves a torch import per case."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import CORPUS_DIR, REPO_ROOT, two_step_training_config
from training.arguments import SpeechTrainingArguments
from training.cli import FLAG_NAMES, NO_FLAG, SECTION_CLASSES, main
from training.transcribe import main as transcribe_main

TINY_ARCHITECTURE = {
    "model_size": "tiny.en",
    "num_encoder_layers": 1,
    "num_decoder_layers": 1,
    "d_model": 64,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
}


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _in_process(capsys, command_main, *args: str) -> subprocess.CompletedProcess:
    """``command_main(args)`` as a finished process: its exit code (argparse's exits included) and output."""
    capsys.readouterr()  # what earlier steps printed is not this command's
    try:
        code = command_main(list(args))
    except SystemExit as exit:
        code = 0 if exit.code is None else exit.code if isinstance(exit.code, int) else 1
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def _config(tmp_path, **training) -> dict:
    (tmp_path / "architecture.json").write_text(json.dumps(TINY_ARCHITECTURE))
    model = {"name_or_path": "tiny.en", "custom_config": str(tmp_path / "architecture.json")}
    return two_step_training_config(
        tmp_path / "run", model, **{"learning_rate": 1e-3, "generation_max_length": 10, **training}
    )


@pytest.mark.slow
def test_help_explains_every_option(capsys):
    top = _in_process(capsys, main, "--help")
    assert top.returncode == 0 and "train" in top.stdout and "evaluate" in top.stdout
    train = _in_process(capsys, main, "train", "--help")
    assert train.returncode == 0, train.stderr
    text = " ".join(train.stdout.split())  # argparse wraps lines
    for section, cls in SECTION_CLASSES:
        for field in dataclasses.fields(cls):
            if (section, field.name) in NO_FLAG:
                continue
            flag = FLAG_NAMES.get((section, field.name), "--" + field.name.replace("_", "-"))
            help_text = " ".join(field.metadata["help"].split())
            assert flag in text, flag
            assert help_text[:40] in text, f"{flag}: no help"
    evaluate = _in_process(capsys, main, "evaluate", "--help")
    assert evaluate.returncode == 0
    for flag in ("--model", "--data", "--output", "--beam-size", "--limit", "--max-new-tokens"):
        assert flag in evaluate.stdout


def test_flags_override_the_config_file(tmp_path, capsys):
    (tmp_path / "train.json").write_text(json.dumps(_config(tmp_path)))
    code = main(
        [
            "--config",
            str(tmp_path / "train.json"),
            "--learning-rate",
            "3e-5",
            "--save-total-limit",
            "none",
            "--augment",
            "--enhanced",
            "--print-config",
        ]
    )
    assert code == 0
    sections = json.loads(capsys.readouterr().out)
    assert sections["training"]["learning_rate"] == 3e-5  # the flag wins
    assert sections["training"]["max_steps"] == 2  # the file's value stays
    assert sections["training"]["save_total_limit"] is None
    assert sections["training"]["per_device_eval_batch_size"] == 8  # the default fills the rest
    assert sections["model"]["use_enhanced_model"] is True
    assert sections["data"]["augment"]["probability"] == 0.5
    assert sections["data"]["train_split"] == str(CORPUS_DIR)
    SpeechTrainingArguments.from_dict(sections["training"])  # what is printed is a valid config again


@pytest.mark.parametrize(
    "change, message",
    [
        ({"training": {"learning_rat": 1}}, r"\[training\]: unknown field\(s\) \['learning_rat'\]"),
        ({"data": {"max_duration": 10}}, r"\[data\]: unknown field\(s\) \['max_duration'\]"),
        ({"trainer": {}}, r"unknown section\(s\) \['trainer'\]"),
        ({"training": {"output_dir": None}}, "output_dir must be a non-empty path"),
    ],
)
def test_config_mistakes_are_reported(tmp_path, capsys, change, message):
    config = _config(tmp_path)
    for section, values in change.items():
        config.setdefault(section, {}).update(values)
    (tmp_path / "train.json").write_text(json.dumps(config))
    assert main(["train", "--config", str(tmp_path / "train.json"), "--print-config"]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_missing_output_dir_is_reported(capsys):
    assert main(["train", "--train-split", str(CORPUS_DIR)]) == 2
    assert "give --output-dir" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        # The first through `python -m training.transcribe` itself (training's own command runs as one in
        # test_train_then_evaluate_through_python_m_training), the others through main(argv) in-process.
        ("training.transcribe", ["missing.wav"], "missing.wav: no such file"),
        ("training.transcribe", ["--beam-size", "0", "a.wav"], "--beam-size must be >= 1, got 0"),
        ("training", ["train", "--output-dir", "run", "--resume"], "run holds no checkpoint-N folder"),
        (
            "training",
            ["train", "--output-dir", "run", "--resume", "nowhere"],
            "checkpoint nowhere does not exist",
        ),
        ("training", ["train", "--config", "missing.json"], "cannot read missing.json"),
        (
            "training",
            ["evaluate", "--data", "nowhere", "--data-dir", "."],
            "split 'nowhere' is neither a path",
        ),
        (
            "training",
            ["evaluate", "--data", str(CORPUS_DIR), "--model", "nomodel"],
            "unknown model 'nomodel'",
        ),
    ],
)
def test_user_mistakes_are_one_line_without_a_traceback(tmp_path, module, args, message, capsys, monkeypatch):
    if (module, args) == ("training.transcribe", ["missing.wav"]):
        result = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    else:
        monkeypatch.chdir(tmp_path)
        result = _in_process(
            capsys, {"training": main, "training.transcribe": transcribe_main}[module], *args
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"python -m {module}") and ": error: " in last and message in last, result.stderr


@pytest.mark.slow
def test_train_then_evaluate_through_python_m_training(tmp_path, capsys):
    (tmp_path / "train.json").write_text(json.dumps(_config(tmp_path)))
    trained = _run("--config", str(tmp_path / "train.json"), "--disable-tqdm")
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "all_results.json").read_text())
    assert metrics["global_step"] == 2 and 0 <= metrics["eval_cer"]
    assert '"eval_wer"' in trained.stdout  # the metrics are printed too
    for folder in (run, run / "checkpoint-2"):  # what `whisper-triton build --model` reads
        assert {"model.safetensors", "config.json", "tokenizer.json", "processor_config.json"} <= {
            p.name for p in folder.iterdir()
        }
    assert json.loads((run / "train_config.json").read_text())["training"]["max_steps"] == 2

    again = _in_process(capsys, main, "--config", str(tmp_path / "train.json"), "--disable-tqdm")
    assert again.returncode == 2 and "pass --resume" in again.stderr  # never silently mixes two runs

    report = tmp_path / "report"
    evaluated = _run(
        "evaluate",
        "--model",
        str(run),
        "--data",
        str(CORPUS_DIR),
        "--limit",
        "2",
        "--max-new-tokens",
        "5",
        "--output",
        str(report),
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "WER" in evaluated.stdout
    assert {p.name for p in report.iterdir()} >= {
        "report.md",
        "metrics.json",
        "per_utterance.csv",
        "wer_by_length.png",
    }
    assert json.loads((report / "metrics.json").read_text())["num_utterances"] == 2
    assert "WER" in (report / "report.md").read_text()
