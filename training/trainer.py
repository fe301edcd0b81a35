"""`SpeechTrainer`: fine-tuning on transformers' ``Seq2SeqTrainer``, evaluated by decoding.

The Trainer does the work — optimiser and schedule, gradient accumulation, mixed precision, checkpoints
and their rotation, resuming, TensorBoard, torchrun/accelerate multi-GPU — and this class adds what a
speech model needs:

- it runs on the DataLoaders it is given (``create_librispeech_dataloaders``), passed through
  ``accelerator.prepare`` so that distributed runs shard them;
- evaluation decodes the eval split with the serving decoder's search (``prediction_step``: the same
  ``Decoder.decode_with_fallback`` as the Triton decoding model, on the same features) and reports WER and CER computed by
  ``training.metrics``; checkpoints are ranked by WER, and ``EarlyStoppingCallback`` stops a run whose
  WER stalls;
- the processor (tokenizer + feature extractor) is saved in every ``checkpoint-N/`` and the final model
  and processor in ``output_dir`` (safetensors), so each of them loads with
  ``create_whisper_model_and_processor`` and builds with ``whisper-triton build --model``;
- fp16/bf16 on a machine without CUDA fall back to float32 with a warning instead of failing.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Seq2SeqTrainer
from transformers.trainer_utils import get_last_checkpoint

from training.arguments import SpeechTrainingArguments
from training.metrics import compute_cer, compute_wer

ARGS_FILE = "speech_training_args.json"  # the SpeechTrainingArguments of the run, next to the final model
RESULTS_FILE = "all_results.json"  # what train() returns (written by Trainer.save_metrics("all", ...))


class SpeechTrainer(Seq2SeqTrainer):
    """Fine-tune a ``WhisperForConditionalGeneration`` on given DataLoaders; see the module docstring."""

    def __init__(
        self,
        model,
        args: SpeechTrainingArguments,
        train_dataloader: torch.utils.data.DataLoader,
        eval_dataloader: torch.utils.data.DataLoader | None = None,
        processor=None,
        callbacks: list | None = None,
    ):
        if not isinstance(args, SpeechTrainingArguments):
            raise TypeError(f"args must be SpeechTrainingArguments, got {type(args).__name__}")
        if processor is None:
            raise ValueError(
                "SpeechTrainer needs the processor: it decodes predictions and is saved with the model"
            )
        # The loaders do the batching; the arguments must agree, or the logged batch sizes and rates would be wrong.
        for loader, name in (
            (train_dataloader, "per_device_train_batch_size"),
            (eval_dataloader, "per_device_eval_batch_size"),
        ):
            if loader is not None and loader.batch_size != getattr(args, name):
                raise ValueError(
                    f"the {'train' if name.endswith('train_batch_size') else 'eval'} loader's batch size is "
                    f"{loader.batch_size} but args.{name} is {getattr(args, name)}; make them equal"
                )
        use_cuda = torch.cuda.is_available()
        for name in ("fp16", "bf16"):
            if getattr(args, name) and not use_cuda:
                warnings.warn(
                    f"{name} needs a CUDA GPU and none is available: training in float32 instead",
                    stacklevel=2,
                )
        evaluate = eval_dataloader is not None
        # The Trainer turns the KV cache off in the model config for training; saved models keep the
        # model's own setting, since they are loaded for inference.
        self._saved_use_cache = getattr(model.config, "use_cache", True)
        hf_args = args.to_seq2seq_training_arguments(evaluate=evaluate, use_cuda=use_cuda)
        config = model.config
        if getattr(config, "encoder_layerdrop", 0) or getattr(config, "decoder_layerdrop", 0):
            # LayerDrop skips whole layers, so some parameters get no gradient in a step; DDP must expect that.
            hf_args.ddp_find_unused_parameters = True
        callbacks = list(callbacks or [])
        if args.early_stopping_patience is not None:
            callbacks.append(
                EarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold)
            )
        super().__init__(
            model=model,
            args=hf_args,
            data_collator=train_dataloader.collate_fn,
            train_dataset=train_dataloader.dataset,
            eval_dataset=eval_dataloader.dataset if evaluate else None,
            processing_class=processor,
            compute_metrics=self._compute_metrics if evaluate else None,
            callbacks=callbacks,
        )
        self.speech_args = args
        self.processor = processor
        self._train_loader = train_dataloader
        self._eval_loader = eval_dataloader
        self.last_transcripts: list[tuple[str, str]] = []  # (prediction, reference) of the latest evaluation

    # ---- data ----

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        return self.accelerator.prepare(self._train_loader)

    def get_eval_dataloader(self, eval_dataset=None) -> torch.utils.data.DataLoader:
        if eval_dataset is None or (
            self._eval_loader is not None and eval_dataset is self._eval_loader.dataset
        ):
            if self._eval_loader is None:
                raise ValueError("SpeechTrainer was built without an eval_dataloader")
            return self.accelerator.prepare(self._eval_loader)
        return super().get_eval_dataloader(eval_dataset)

    # ---- evaluation: the serving decoder's search, not generate() ----

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The eval loss as transformers computes it, and the eval transcripts as the server decodes them:
        ``Decoder.decode_with_fallback`` (greedy or ``generation_num_beams`` beams, openai's guards) over this
        model, so the WER reported in training is the WER serving gives."""
        loss, _, _ = super().prediction_step(model, inputs, True, ignore_keys=ignore_keys)
        if prediction_loss_only:
            return loss, None, None
        tokens = self._decode(model, inputs["input_features"])
        return loss, tokens, inputs["labels"]

    def _decode(self, model, features: torch.Tensor) -> torch.Tensor:
        from training.torch_backend import TorchEncoder, torch_decoder
        from whisper_triton.options import DecodingOptions

        model = self.accelerator.unwrap_model(model)
        options = DecodingOptions(
            beam_size=self.args.generation_num_beams or 1,
            max_length=self.args.generation_max_length or None,  # transformers' meaning: prompt included
            timestamps=False,
        )
        states = TorchEncoder(model)(features.float().cpu().numpy())
        # Every window is a whole (<= 30-s) utterance, as WindowContext's default duration says.
        results = torch_decoder(model, self.processor).decode_with_fallback(states, options)
        width = max([len(r.tokens) for r in results] + [1])
        padded = torch.full((len(results), width), -100, dtype=torch.long)  # -100: padding, as in labels
        for row, result in enumerate(results):
            padded[row, : len(result.tokens)] = torch.tensor(result.tokens, dtype=torch.long)
        return padded.to(features.device)

    # ---- metrics ----

    def _compute_metrics(self, prediction) -> dict[str, float]:
        """WER and CER of the decoded eval split (labels and predictions are padded with -100)."""
        tokenizer = self.processor.tokenizer
        predicted = (
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        # -100 marks padding; any special token stands in for it, since decoding skips special tokens.
        filler = tokenizer.eos_token_id
        hypotheses = tokenizer.batch_decode(
            np.where(predicted < 0, filler, predicted), skip_special_tokens=True
        )
        references = tokenizer.batch_decode(
            np.where(prediction.label_ids < 0, filler, prediction.label_ids), skip_special_tokens=True
        )
        hypotheses = [text.strip() for text in hypotheses]
        references = [text.strip() for text in references]
        self.last_transcripts = list(zip(hypotheses, references, strict=True))
        return {"wer": compute_wer(hypotheses, references), "cer": compute_cer(hypotheses, references)}

    # ---- saving ----

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save as the Trainer does (model, config, processor), with the inference ``use_cache``."""
        config = self.model.config
        training_use_cache, config.use_cache = config.use_cache, self._saved_use_cache
        try:
            super()._save(output_dir, state_dict)
        finally:
            config.use_cache = training_use_cache

    # ---- training ----

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs) -> dict[str, Any]:
        """Train, save the final model and processor in ``output_dir``, and return the run's metrics.

        ``resume_from_checkpoint``: True continues from the last ``checkpoint-N`` in ``output_dir``, a path
        from that checkpoint (optimiser, schedule, RNG states and global step included).

        The returned dict has transformers' train metrics (``train_loss``, ``train_runtime``, ...),
        ``global_step``, ``epoch``, the final model's ``eval_wer``/``eval_cer``/``eval_loss`` (from the log
        when the final model is an evaluated checkpoint, else by a fresh evaluation), and
        ``best_model_checkpoint``. It is also written to ``output_dir/all_results.json``.
        """
        output_dir = Path(self.args.output_dir)
        if resume_from_checkpoint is True and (
            not output_dir.is_dir() or get_last_checkpoint(output_dir) is None
        ):
            raise ValueError(f"cannot resume: {output_dir} holds no checkpoint-N folder")
        if resume_from_checkpoint not in (None, False, True) and not Path(resume_from_checkpoint).is_dir():
            raise ValueError(f"cannot resume: checkpoint {resume_from_checkpoint} does not exist")
        if self.is_world_process_zero():
            self.speech_args.save_to_json(output_dir / ARGS_FILE)
        output = super().train(resume_from_checkpoint=resume_from_checkpoint or None, **kwargs)
        self.save_model()  # model.safetensors, config, generation config and processor in output_dir
        metrics: dict[str, Any] = dict(output.metrics)
        metrics.update(global_step=self.state.global_step, epoch=self.state.epoch)
        if self.eval_dataset is not None:
            metrics.update(self._final_eval_metrics())
        metrics["best_model_checkpoint"] = self.state.best_model_checkpoint
        self.save_metrics("all", metrics, combined=False)
        self.save_state()
        return metrics

    def _final_eval_metrics(self) -> dict[str, float]:
        """The eval metrics of the model now in memory: logged ones if it was evaluated, else new ones."""
        step = self.state.global_step
        if self.args.load_best_model_at_end and self.state.best_model_checkpoint:
            step = int(re.search(r"checkpoint-(\d+)$", self.state.best_model_checkpoint).group(1))
        for entry in reversed(self.state.log_history):
            if entry.get("step") == step and "eval_wer" in entry:
                return {key: value for key, value in entry.items() if key.startswith("eval_")}
        return self.evaluate()
