"""`SpeechTrainingArguments`: the options of one fine-tuning run, validated once, saved as JSON.

A frozen dataclass, as in openai/whisper's ``DecodingOptions``: vary it with ``dataclasses.replace``.
Every field carries its help text in ``metadata["help"]``; ``python -m training train --help`` is built
from it, so the documentation of an option exists once. ``to_seq2seq_training_arguments`` maps it onto
transformers' ``Seq2SeqTrainingArguments``, which ``SpeechTrainer`` runs on.

Units: ``early_stopping_threshold`` is in WER as a fraction (0.01 = one percentage point), the unit
``training.metrics.compute_wer`` returns and the trainer logs as ``eval_wer``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.model_config import MAX_TARGET_POSITIONS

# Schedules that warm up over ``warmup_steps`` and then follow their shape (transformers' names).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
REPORT_TARGETS = ("tensorboard", "none")  # where the Trainer's logs go; tensorboard writes output_dir/runs/
BEST_MODEL_METRIC = "wer"  # checkpoints are ranked by eval WER, lower is better


class TrainingArgumentsError(ValueError):
    """An invalid training option; the message names the field and the accepted values."""


def documented(text: str, **kwargs) -> Any:
    """A dataclass field with its help text, which the command line shows (``field_help``)."""
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class SpeechTrainingArguments:
    """Options of one fine-tuning run (see the module docstring for units)."""

    output_dir: str = documented(
        "folder for checkpoints (checkpoint-N/), TensorBoard logs (runs/) and the final model"
    )
    num_train_epochs: float = documented(
        "passes over the training data (ignored when max_steps > 0)", default=3.0
    )
    per_device_train_batch_size: int = documented("utterances per batch on each device", default=8)
    gradient_accumulation_steps: int = documented(
        "batches whose gradients are summed before one optimiser step (effective batch = batch x this x devices)",
        default=1,
    )
    learning_rate: float = documented(
        "peak AdamW learning rate (1e-5 is the usual value for Whisper fine-tuning)", default=1e-5
    )
    weight_decay: float = documented("AdamW weight decay", default=0.0)
    max_grad_norm: float = documented(
        "clip the gradient norm to this value (0 disables clipping)", default=1.0
    )
    lr_scheduler_type: str = documented(
        f"learning-rate schedule after warm-up: {', '.join(LR_SCHEDULERS)}", default="linear"
    )
    warmup_steps: int = documented("optimiser steps of linear warm-up from 0 to learning_rate", default=0)
    fp16: bool = documented(
        "mixed precision float16 (needs a CUDA GPU; ignored with a warning on CPU)", default=False
    )
    logging_steps: int = documented("log loss and learning rate every N optimiser steps", default=10)
    eval_steps: int = documented(
        "evaluate (decode the eval split, WER/CER) every N optimiser steps", default=100
    )
    save_steps: int = documented(
        "write checkpoint-N every N optimiser steps (a multiple of eval_steps when evaluating with "
        "load_best_model_at_end)",
        default=100,
    )
    save_total_limit: int | None = documented(
        "keep at most this many checkpoints, deleting the oldest (the best one is always kept); none = keep all",
        default=3,
    )
    early_stopping_patience: int | None = documented(
        "stop after this many evaluations without a WER improvement; none = never stop early", default=None
    )
    early_stopping_threshold: float = documented(
        "an evaluation improves only if WER drops by more than this (a fraction: 0.01 = 1 point)", default=0.0
    )
    bf16: bool = documented(
        "mixed precision bfloat16 (needs a CUDA GPU; ignored with a warning on CPU)", default=False
    )
    seed: int = documented("seed for model init, shuffling, dropout and augmentation", default=42)
    per_device_eval_batch_size: int = documented("utterances per batch when evaluating", default=8)
    max_steps: int = documented(
        "stop after this many optimiser steps; overrides num_train_epochs when > 0", default=-1
    )
    generation_num_beams: int = documented("beam size when decoding the eval split (1 = greedy)", default=1)
    generation_max_length: int = documented(
        f"longest decoded sequence in tokens, prompt included, at most {MAX_TARGET_POSITIONS}", default=225
    )
    load_best_model_at_end: bool = documented(
        "after training, load the checkpoint with the lowest eval WER before saving the final model",
        default=True,
    )
    gradient_checkpointing: bool = documented(
        "recompute activations in the backward pass: less memory, ~30% slower", default=False
    )
    report_to: tuple[str, ...] = documented(
        f"log targets: {', '.join(REPORT_TARGETS)}", default=("tensorboard",)
    )
    disable_tqdm: bool = documented("hide the progress bar", default=False)

    def __post_init__(self):
        if isinstance(self.report_to, (str, list)):  # JSON gives lists; a flag may give one name
            names = self.report_to.split(",") if isinstance(self.report_to, str) else self.report_to
            object.__setattr__(self, "report_to", tuple(n.strip() for n in names if n.strip()))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.output_dir, (str, os.PathLike)) or not os.fspath(self.output_dir):
            raise TrainingArgumentsError("output_dir must be a non-empty path")
        object.__setattr__(self, "output_dir", os.fspath(self.output_dir))
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "eval_steps",
            "save_steps",
            "generation_num_beams",
            "generation_max_length",
        ):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        _check_int("max_steps", self.max_steps, minimum=-1)
        if self.max_steps == 0:
            raise TrainingArgumentsError("max_steps must be > 0, or -1 to train for num_train_epochs")
        for name in ("save_total_limit", "early_stopping_patience"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        for name in ("learning_rate", "num_train_epochs"):
            _check_real(name, getattr(self, name), positive=True)
        for name in ("weight_decay", "max_grad_norm", "early_stopping_threshold"):
            _check_real(name, getattr(self, name), positive=False)
        if self.lr_scheduler_type not in LR_SCHEDULERS:
            raise TrainingArgumentsError(
                f"lr_scheduler_type {self.lr_scheduler_type!r} is unknown; choose one of {', '.join(LR_SCHEDULERS)}"
            )
        for name in ("fp16", "bf16", "load_best_model_at_end", "gradient_checkpointing", "disable_tqdm"):
            if not isinstance(getattr(self, name), bool):
                raise TrainingArgumentsError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.fp16 and self.bf16:
            raise TrainingArgumentsError("choose one of fp16 and bf16, not both")
        unknown = [name for name in self.report_to if name not in REPORT_TARGETS]
        if unknown or not self.report_to or ("none" in self.report_to and len(self.report_to) > 1):
            raise TrainingArgumentsError(
                f"report_to {list(self.report_to)} is invalid; give one or more of {list(REPORT_TARGETS)[:-1]} or ['none']"
            )
        if self.generation_max_length < 0 or self.generation_max_length == 1:
            # Evaluation decodes at most this many tokens from <|startoftranscript|>: 0 leaves it to the
            # model, and one token would be the start token alone (checked here, not mid-training).
            raise TrainingArgumentsError(
                f"generation_max_length must be 0 (no limit) or at least 2, got {self.generation_max_length}"
            )
        if self.generation_max_length > MAX_TARGET_POSITIONS:
            raise TrainingArgumentsError(
                f"generation_max_length must be at most {MAX_TARGET_POSITIONS} (Whisper's decoder positions), "
                f"got {self.generation_max_length}"
            )
        if self.early_stopping_patience is not None and not self.load_best_model_at_end:
            raise TrainingArgumentsError(
                "early stopping needs load_best_model_at_end (transformers' EarlyStoppingCallback tracks the best "
                "checkpoint); set load_best_model_at_end to true or early_stopping_patience to none"
            )

    # ---- JSON ----

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["report_to"] = list(self.report_to)
        return values

    def save_to_json(self, path: str | os.PathLike) -> Path:
        """Write the arguments as JSON; ``from_json`` reads them back equal."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "training arguments") -> SpeechTrainingArguments:
        """Build from a dict, rejecting unknown keys by name (a typo must not be silently ignored)."""
        if not isinstance(values, dict):
            raise TrainingArgumentsError(f"{source}: expected a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingArgumentsError(
                f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}"
            )
        if "output_dir" not in values:
            raise TrainingArgumentsError(f"{source}: output_dir is required")
        try:
            return cls(**values)
        except TrainingArgumentsError as error:
            raise TrainingArgumentsError(f"{source}: {error}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SpeechTrainingArguments:
        """Read arguments written by ``save_to_json`` (or by hand: omitted fields take their defaults)."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise TrainingArgumentsError(f"cannot read training arguments from {path}: {error}") from error
        return cls.from_dict(values, source=str(path))

    # ---- transformers ----

    def to_seq2seq_training_arguments(self, evaluate: bool = True, use_cuda: bool | None = None):
        """The equivalent ``transformers.Seq2SeqTrainingArguments``.

        ``evaluate=False`` (no eval data) turns evaluation, best-model tracking and early stopping off.
        fp16/bf16 are kept only when CUDA is available (``use_cuda`` overrides the check); the caller
        warns when it drops them.
        """
        from transformers import Seq2SeqTrainingArguments

        if use_cuda is None:
            import torch

            use_cuda = torch.cuda.is_available()
        if self.early_stopping_patience is not None and not evaluate:
            raise TrainingArgumentsError("early_stopping_patience needs eval data to measure WER on")
        track_best = evaluate and self.load_best_model_at_end
        # The Trainer can only restore the best checkpoint if one is written at every evaluation it may pick.
        if track_best and self.save_steps % self.eval_steps:
            raise TrainingArgumentsError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) so that the best "
                "evaluation has a checkpoint; or set load_best_model_at_end to false"
            )
        return Seq2SeqTrainingArguments(
            output_dir=self.output_dir,
            num_train_epochs=self.num_train_epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size,
            per_device_eval_batch_size=self.per_device_eval_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_steps,
            fp16=self.fp16 and use_cuda,
            bf16=self.bf16 and use_cuda,
            logging_strategy="steps",
            logging_steps=self.logging_steps,
            logging_first_step=True,
            eval_strategy="steps" if evaluate else "no",
            eval_steps=self.eval_steps if evaluate else None,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            load_best_model_at_end=track_best,
            metric_for_best_model=BEST_MODEL_METRIC if track_best else None,
            greater_is_better=False if track_best else None,
            seed=self.seed,
            predict_with_generate=True,  # evaluation decodes with generate(), as transcription does
            generation_num_beams=self.generation_num_beams,
            generation_max_length=self.generation_max_length,
            activation_checkpointing=self.gradient_checkpointing,
            report_to=[] if self.report_to == ("none",) else list(self.report_to),
            disable_tqdm=self.disable_tqdm,
            # Our collator returns exactly the model's inputs; the Trainer must not drop "unused" columns.
            remove_unused_columns=False,
            label_names=["labels"],
        )


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainingArgumentsError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_real(name: str, value, positive: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise TrainingArgumentsError(
            f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}"
        )


def field_help(cls) -> dict[str, str]:
    """The help text of each field of a dataclass declared with ``documented``."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
