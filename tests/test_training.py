"""SpeechTrainingArguments and SpeechTrainer on a tiny random Whisper and real corpus utterances.

The model has one 64-wide layer on each side (tokenizer and generation settings of tiny.en), so a step
takes a fraction of a second on CPU; the data are corpus utterances through the real loaders and collator.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from tests.conftest import CORPUS_DIR
from training.arguments import SpeechTrainingArguments, TrainingArgumentsError
from training.data import DataConfig, create_data_collator, create_speech_dataloaders
from training.model_config import WhisperModelConfig
from training.modeling import create_whisper_model_and_processor
from training.trainer import ARGS_FILE, SpeechTrainer

TINY = WhisperModelConfig(
    "tiny.en",
    num_encoder_layers=1,
    num_decoder_layers=1,
    d_model=64,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
)
QUICK = dict(
    learning_rate=1e-3,  # a random model: large steps so that a handful of them visibly lowers the loss
    per_device_train_batch_size=2,
    per_device_eval_batch_size=2,
    logging_steps=1,
    generation_max_length=12,  # a random model never stops by itself; keep its evaluation short
    report_to=("none",),
    disable_tqdm=True,
)


def _tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return create_whisper_model_and_processor("tiny.en", custom_config=TINY)


def _loaders(processor, num_train: int = 4, num_eval: int | None = 2):
    config = DataConfig(max_train_samples=num_train, max_eval_samples=num_eval or 1, eval_batch_size=2)
    return create_speech_dataloaders(
        str(CORPUS_DIR), str(CORPUS_DIR) if num_eval else None, config, 2, create_data_collator(processor)
    )


def _trainer(output_dir: Path, num_eval: int | None = None, seed: int = 0, **options) -> SpeechTrainer:
    model, processor = _tiny_model(seed)
    train_loader, eval_loader = _loaders(processor, num_eval=num_eval)
    args = SpeechTrainingArguments(str(output_dir), **{**QUICK, **options})
    return SpeechTrainer(model, args, train_loader, eval_loader, processor)


def _logged(trainer: SpeechTrainer, key: str) -> list[tuple[int, float]]:
    return [(entry["step"], entry[key]) for entry in trainer.state.log_history if key in entry]


# ---- arguments ----


def test_arguments_round_trip_through_json(tmp_path):
    args = SpeechTrainingArguments(
        str(tmp_path),
        learning_rate=3e-5,
        lr_scheduler_type="cosine",
        save_total_limit=None,
        early_stopping_patience=2,
        early_stopping_threshold=0.005,
        report_to=("tensorboard",),
    )
    path = args.save_to_json(tmp_path / "args.json")
    assert SpeechTrainingArguments.from_json(path) == args
    assert dataclasses.replace(args, seed=7).seed == 7


@pytest.mark.parametrize(
    "options, message",
    [
        ({"learning_rate": 0}, "learning_rate must be a finite number > 0"),
        ({"lr_scheduler_type": "cosin"}, "'cosin' is unknown; choose one of linear, cosine"),
        ({"fp16": True, "bf16": True}, "choose one of fp16 and bf16"),
        ({"save_total_limit": 0}, "save_total_limit must be an integer >= 1"),
        ({"generation_max_length": 500}, "generation_max_length must be at most 448"),
        ({"generation_max_length": 1}, "generation_max_length must be 0 .no limit. or at least 2"),
        (
            {"early_stopping_patience": 1, "load_best_model_at_end": False},
            "early stopping needs load_best_model",
        ),
        ({"report_to": ("wandb",)}, "report_to"),
    ],
)
def test_invalid_arguments_are_refused_with_the_field_named(tmp_path, options, message):
    with pytest.raises(TrainingArgumentsError, match=message):
        SpeechTrainingArguments(str(tmp_path), **options)


def test_unknown_json_field_is_named(tmp_path):
    (tmp_path / "args.json").write_text(json.dumps({"output_dir": "x", "learning_rat": 1e-5}))
    with pytest.raises(TrainingArgumentsError, match=r"unknown field\(s\) \['learning_rat'\]"):
        SpeechTrainingArguments.from_json(tmp_path / "args.json")


def test_checkpoints_must_land_on_evaluations_when_the_best_is_restored(tmp_path):
    args = SpeechTrainingArguments(str(tmp_path), eval_steps=10, save_steps=15)
    with pytest.raises(
        TrainingArgumentsError, match=r"save_steps \(15\) must be a multiple of eval_steps \(10\)"
    ):
        args.to_seq2seq_training_arguments(evaluate=True)
    args.to_seq2seq_training_arguments(evaluate=False)  # without evaluation there is no best checkpoint
    dataclasses.replace(args, load_best_model_at_end=False).to_seq2seq_training_arguments(evaluate=True)


def test_conversion_to_transformers_arguments(tmp_path):
    args = SpeechTrainingArguments(
        str(tmp_path),
        gradient_accumulation_steps=4,
        lr_scheduler_type="cosine",
        warmup_steps=50,
        eval_steps=20,
        save_steps=40,
        save_total_limit=2,
        generation_num_beams=5,
        fp16=True,
    )
    hf = args.to_seq2seq_training_arguments(evaluate=True, use_cuda=False)
    assert (hf.gradient_accumulation_steps, hf.warmup_steps, hf.eval_steps, hf.save_steps) == (4, 50, 20, 40)
    assert (
        str(hf.lr_scheduler_type.value if hasattr(hf.lr_scheduler_type, "value") else hf.lr_scheduler_type)
        == "cosine"
    )
    assert hf.metric_for_best_model == "wer" and hf.greater_is_better is False and hf.load_best_model_at_end
    assert hf.predict_with_generate and hf.generation_num_beams == 5
    assert hf.fp16 is False  # no CUDA: float32
    assert args.to_seq2seq_training_arguments(evaluate=True, use_cuda=True).fp16 is True
    no_eval = args.to_seq2seq_training_arguments(evaluate=False, use_cuda=False)
    assert str(no_eval.eval_strategy) in ("no", "IntervalStrategy.NO") and not no_eval.load_best_model_at_end


# ---- trainer ----


@pytest.mark.slow
def test_loss_goes_down_with_warmup_and_cosine_schedule(tmp_path):
    trainer = _trainer(tmp_path, max_steps=8, warmup_steps=2, lr_scheduler_type="cosine", save_steps=8)
    metrics = trainer.train()
    losses = [loss for _, loss in _logged(trainer, "loss")]
    rates = [rate for _, rate in _logged(trainer, "learning_rate")]
    assert len(losses) == 8 and metrics["global_step"] == 8
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.1, losses
    # The logged rate is the one each step used: linear warm-up from 0 over 2 steps, then the cosine decay.
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1e-3)
    assert rates[2] > rates[4] > rates[7] > 0
    # The final model and its processor load like any other model directory.
    model, processor = create_whisper_model_and_processor(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and processor.tokenizer.eos_token_id is not None
    state = trainer.model.state_dict()
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    assert SpeechTrainingArguments.from_json(tmp_path / ARGS_FILE) == trainer.speech_args
    # Saved for inference: the KV cache the Trainer switches off while training is on again.
    assert json.loads((tmp_path / "config.json").read_text())["use_cache"] is True
    assert json.loads((tmp_path / "checkpoint-8" / "config.json").read_text())["use_cache"] is True
    assert json.loads((tmp_path / "all_results.json").read_text())["global_step"] == 8


def test_gradient_accumulation_counts_optimiser_steps(tmp_path):
    trainer = _trainer(
        tmp_path, num_train_epochs=1, per_device_train_batch_size=2, gradient_accumulation_steps=2
    )
    assert trainer.train()["global_step"] == 1  # 4 utterances = 2 batches = 1 optimiser step


class _Interrupt(TrainerCallback):
    """Stops a run after ``step`` optimiser steps, as a crash or a pre-empted job would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.mark.slow
def test_checkpoints_rotate_and_an_interrupted_run_resumes_exactly(tmp_path):
    options = dict(max_steps=6, save_steps=1, save_total_limit=2)
    reference = _trainer(tmp_path / "reference", **options)
    reference.train()

    run = tmp_path / "run"
    interrupted = _trainer(run, **options)
    interrupted.add_callback(_Interrupt(4))
    assert interrupted.train()["global_step"] == 4
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    # Every checkpoint is a complete model directory, processor included: it loads on its own.
    alone = tmp_path / "elsewhere" / "checkpoint-4"
    shutil.copytree(run / "checkpoint-4", alone)
    assert {"model.safetensors", "config.json", "tokenizer.json", "processor_config.json"} <= {
        p.name for p in alone.iterdir()
    }
    create_whisper_model_and_processor(alone)

    resumed = _trainer(run, seed=1, **options)  # another random init: the checkpoint must replace it
    metrics = resumed.train(resume_from_checkpoint=True)
    assert metrics["global_step"] == 6
    # Steps 1-4 come from the checkpoint's log, 5-6 from the resumed run.
    assert [step for step, _ in _logged(resumed, "loss")] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-6"]
    # Weights, optimiser, schedule, RNG and data position were all restored: the run ends where the
    # uninterrupted one does.
    resumed_losses = [loss for _, loss in _logged(resumed, "loss")[4:]]
    assert resumed_losses == pytest.approx([loss for _, loss in _logged(reference, "loss")[4:]], abs=1e-4)
    expected = reference.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-4)


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoint-N"):
        _trainer(tmp_path, max_steps=1).train(resume_from_checkpoint=True)


@pytest.mark.slow
def test_early_stopping_on_eval_wer(tmp_path):
    # No WER improvement can exceed the threshold, so the second evaluation exhausts a patience of 1.
    trainer = _trainer(
        tmp_path,
        num_eval=2,
        max_steps=20,
        eval_steps=1,
        save_steps=1,
        early_stopping_patience=1,
        early_stopping_threshold=1e9,
    )
    metrics = trainer.train()
    assert metrics["global_step"] == 2
    assert [step for step, _ in _logged(trainer, "eval_wer")] == [1, 2]
    assert {"eval_wer", "eval_cer", "eval_loss"} <= set(metrics)
    # The threshold only governs patience; the checkpoint with the lower WER is still the best one.
    best_step = min(_logged(trainer, "eval_wer"), key=lambda logged: logged[1])[0]
    assert metrics["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert metrics["eval_wer"] == min(wer for _, wer in _logged(trainer, "eval_wer"))


@pytest.mark.slow
def test_evaluation_decodes_like_the_reference_transcriber(tmp_path, corpus_entries, corpus_audio):
    """The Trainer's WER comes from generate() on the same features as transcribe_audio: same transcripts."""
    from training.metrics import compute_cer, compute_wer
    from training.transcribe import transcribe_audio

    model, processor = create_whisper_model_and_processor("tiny.en")
    train_loader, eval_loader = _loaders(processor, num_train=2, num_eval=3)
    args = SpeechTrainingArguments(str(tmp_path), **{**QUICK, "generation_max_length": 225})
    trainer = SpeechTrainer(model, args, train_loader, eval_loader, processor)
    metrics = trainer.evaluate()
    expected = transcribe_audio(model, processor, corpus_audio[:3])
    references = [entry["text"] for entry in corpus_entries[:3]]
    assert [hypothesis for hypothesis, _ in trainer.last_transcripts] == expected
    assert [reference for _, reference in trainer.last_transcripts] == references
    assert metrics["eval_wer"] == pytest.approx(compute_wer(expected, references))
    assert metrics["eval_cer"] == pytest.approx(compute_cer(expected, references))


def test_loader_and_argument_batch_sizes_must_agree(tmp_path):
    with pytest.raises(
        ValueError, match="loader's batch size is 2 but args.per_device_train_batch_size is 4"
    ):
        _trainer(tmp_path, per_device_train_batch_size=4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_mixed_precision_falls_back_to_float32_on_cpu(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(tmp_path, max_steps=1, fp16=True)
    assert any("fp16 needs a CUDA GPU" in str(w.message) for w in caught)
    assert trainer.args.fp16 is False


def test_tensorboard_logs_are_written(tmp_path):
    trainer = _trainer(tmp_path, max_steps=2, save_steps=2, report_to=("tensorboard",))
    trainer.train()
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*"))
