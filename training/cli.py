"""``python -m training``: fine-tune (``train``) and score (``evaluate``) Whisper models.

    python -m training train --config train.json [--learning-rate 3e-5 ...]   # flags override the file
    python -m training --config train.json                                    # "train" is the default
    python -m training evaluate --model DIR --data DIR [--output DIR] [--beam-size N] [--limit N]

The training flags are generated from the fields of ``SpeechTrainingArguments``, ``DataConfig`` and
``ModelOptions`` (their help texts are the fields' documentation), so the JSON sections and the flags
cannot drift apart: ``--learning-rate`` is ``"training": {"learning_rate": ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.arguments import SpeechTrainingArguments, TrainingArgumentsError, documented, field_help
from training.data import DataConfig
from training.utterances import DataError

CONFIG_FILE = "train_config.json"  # the resolved configuration of a run, written into its output_dir
SECTIONS = ("model", "data", "training")


@dataclass(frozen=True)
class ModelOptions:
    """Which model to fine-tune (the ``"model"`` section)."""

    name_or_path: str = documented(
        "model to start from: tiny.en (bundled), a Hugging Face id, a transformers/CTranslate2 folder or a checkpoint",
        default="tiny.en",
    )
    use_enhanced_model: bool = documented(
        "fine-tune the enhanced model: SpecAugment, LayerDrop and dropout (training.modeling.ENHANCED_MODEL_OVERRIDES)",
        default=False,
    )
    custom_config: str | None = documented(
        "WhisperModelConfig JSON: start from random weights of this architecture (tokenizer from name_or_path)",
        default=None,
    )
    freeze_encoder: bool = documented(
        "train only the decoder (the encoder's weights stay as loaded): about 3x faster steps on CPU",
        default=False,
    )


@dataclass(frozen=True)
class SplitOptions:
    """Which splits to train and evaluate on (the ``"data"`` section, next to ``DataConfig``'s fields)."""

    train_split: str = documented(
        "training split: a LibriSpeech-layout folder, a JSONL/CSV manifest, a split under data_dir, "
        "or a LibriSpeech split name (train-clean-100, ...) loaded from the Hugging Face hub",
        default="train-clean-100",
    )
    eval_split: str | None = documented(
        "evaluation split (same forms as train_split); none = no evaluation, early stopping or best-model selection",
        default="dev-clean",
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``python -m training train`` needs."""

    model: ModelOptions
    splits: SplitOptions
    data: DataConfig
    training: SpeechTrainingArguments

    @classmethod
    def from_sections(cls, sections: dict[str, dict[str, Any]], source: str = "config") -> TrainConfig:
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise TrainingArgumentsError(f"{source}: unknown section(s) {unknown}; expected {list(SECTIONS)}")
        data = dict(sections.get("data", {}))
        split_values = {name: data.pop(name) for name in ("train_split", "eval_split") if name in data}
        model = _build(ModelOptions, sections.get("model", {}), f"{source} [model]")
        training = SpeechTrainingArguments.from_dict(
            sections.get("training", {}), source=f"{source} [training]"
        )
        return cls(
            model=model,
            splits=_build(SplitOptions, split_values, f"{source} [data]"),
            data=DataConfig.from_dict(data, source=f"{source} [data]"),
            training=training,
        )

    def to_sections(self) -> dict[str, dict[str, Any]]:
        data = {**dataclasses.asdict(self.splits), **self.data.to_dict()}
        return {"model": dataclasses.asdict(self.model), "data": data, "training": self.training.to_dict()}


def _build(cls, values: dict[str, Any], source: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TrainingArgumentsError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**values)


# ---- flags generated from the dataclasses ----

# Flags whose name is not the field name: the short, familiar ones.
FLAG_NAMES = {
    ("model", "name_or_path"): "--model",
    ("model", "use_enhanced_model"): "--enhanced",
    ("training", "per_device_train_batch_size"): "--batch-size",
    ("training", "per_device_eval_batch_size"): "--eval-batch-size",
    ("training", "generation_num_beams"): "--beam-size",
    ("data", "seed"): "--augment-seed",
}
# Fields without a flag: the eval batch size is --eval-batch-size (training), whichever section holds it.
NO_FLAG = {("data", "eval_batch_size")}
SECTION_CLASSES = (
    ("model", ModelOptions),
    ("data", SplitOptions),
    ("data", DataConfig),
    ("training", SpeechTrainingArguments),
)


def _none_or(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _add_field(group, section: str, field: dataclasses.Field, help_text: str) -> None:
    flag = FLAG_NAMES.get((section, field.name), "--" + field.name.replace("_", "-"))
    kind = str(field.type)
    default = field.default if field.default is not dataclasses.MISSING else None
    if field.default is dataclasses.MISSING:
        suffix = " (required)"
    elif default is None:
        suffix = "" if "default" in help_text or "none =" in help_text else " (default: none)"
    else:
        suffix = f" (default: {','.join(default) if isinstance(default, tuple) else default})"
    text = (help_text + suffix).replace("%", "%%")  # argparse formats help with %
    options: dict[str, Any] = dict(dest=f"{section}.{field.name}", default=argparse.SUPPRESS, help=text)
    if kind == "bool" or field.name == "augment":
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        return
    base = {"int": int, "float": float}.get(kind.split(" | ")[0], str)
    parse = _none_or(base) if "None" in kind else base
    group.add_argument(
        flag, type=parse, metavar=base.__name__.upper() if base is not str else "VALUE", **options
    )


def _train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model",
        description='Fine-tune a Whisper model. Options come from --config (a JSON file with "model", "data" '
        'and "training" sections named like the flags below, with underscores), then from the flags. '
        "Checkpoints go to OUTPUT_DIR/checkpoint-N, TensorBoard logs to OUTPUT_DIR/runs, and the final model "
        "and processor to OUTPUT_DIR.",
    )
    parser.add_argument("--config", type=Path, help='JSON file with "model", "data" and "training" sections')
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue from the last checkpoint-N in output_dir, or from CHECKPOINT",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration as JSON and exit"
    )
    titles = {
        ModelOptions: "model",
        SplitOptions: "data",
        DataConfig: "data preparation",
        SpeechTrainingArguments: "training",
    }
    for section, cls in SECTION_CLASSES:
        group = parser.add_argument_group(titles[cls])
        helps = field_help(cls)
        for field in dataclasses.fields(cls):
            if (section, field.name) in NO_FLAG:
                continue
            _add_field(group, section, field, helps[field.name])
    return parser


def _evaluate_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="transcribe a data set and write a WER/CER report",
        description="Transcribe every utterance of a data set with the PyTorch reference decoder and write "
        "report.md, metrics.json, per_utterance.csv and wer_by_length.png into --output.",
    )
    parser.add_argument(
        "--model", default="tiny.en", help="model name or folder, as for train (default: tiny.en)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="LibriSpeech-layout folder, JSONL/CSV manifest, split under --data-dir, or LibriSpeech split name",
    )
    parser.add_argument("--data-dir", help="folder holding the splits, when --data is a split name")
    parser.add_argument(
        "--output",
        type=Path,
        help="report folder (default: eval-results/<model>_<data> in the current folder)",
    )
    parser.add_argument(
        "--beam-size", type=int, default=1, help="1 = greedy decoding (default), >1 = beam search"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="utterances decoded together (default: 8)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N utterances")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="stop each transcript after N tokens (default: the model's 448-token limit)",
    )
    parser.add_argument(
        "--lowercase", action="store_true", help="lower-case the references (scores are case-blind anyway)"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Fine-tune and evaluate Whisper models. `python -m training COMMAND --help` lists a command's "
        "options; without a command, `train` is meant.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(subparsers)
    _evaluate_parser(subparsers)
    return parser


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the --config file, then the flags given on the command line."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    source = "command line"
    if args.config is not None:
        source = str(args.config)
        try:
            loaded = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise TrainingArgumentsError(f"cannot read {args.config}: {error}") from error
        if not isinstance(loaded, dict):
            raise TrainingArgumentsError(
                f"{args.config}: expected a JSON object with sections {list(SECTIONS)}"
            )
        sections.update({name: dict(values) for name, values in loaded.items()})
    for dest, value in vars(args).items():
        if "." in dest:
            section, name = dest.split(".", 1)
            sections.setdefault(section, {})[name] = value
    if "output_dir" not in sections.get("training", {}):
        raise TrainingArgumentsError('give --output-dir or "training": {"output_dir": ...} in --config')
    return TrainConfig.from_sections(sections, source=source)


# ---- commands ----


def run_train(config: TrainConfig, resume: str | bool | None = None) -> dict[str, Any]:
    """Fine-tune as ``config`` says; returns ``SpeechTrainer.train``'s metrics."""
    output_dir = Path(config.training.output_dir)
    if not resume and any(output_dir.glob("checkpoint-*")):
        raise TrainingArgumentsError(
            f"{output_dir} already holds checkpoints; pass --resume to continue that run, or choose another output_dir"
        )
    # Checked before minutes of model and data loading, not by the Trainer afterwards.
    if resume is True and not any(output_dir.glob("checkpoint-*")):
        raise TrainingArgumentsError(f"--resume: {output_dir} holds no checkpoint-N folder to continue from")
    if isinstance(resume, str) and not Path(resume).is_dir():
        raise TrainingArgumentsError(f"--resume: checkpoint {resume} does not exist")
    from transformers import set_seed

    from training.data import create_data_collator, create_speech_dataloaders
    from training.modeling import create_whisper_model_and_processor
    from training.trainer import SpeechTrainer

    set_seed(config.training.seed)  # before the model exists: a custom_config's random weights depend on it
    model, processor = create_whisper_model_and_processor(
        config.model.name_or_path, config.model.use_enhanced_model, config.model.custom_config
    )
    if config.model.freeze_encoder:
        model.freeze_encoder()
    data = config.data
    if data.eval_batch_size is None:
        data = dataclasses.replace(data, eval_batch_size=config.training.per_device_eval_batch_size)
    train_loader, eval_loader = create_speech_dataloaders(
        config.splits.train_split,
        config.splits.eval_split,
        data,
        config.training.per_device_train_batch_size,
        create_data_collator(processor, data.max_label_tokens),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / CONFIG_FILE).write_text(json.dumps(config.to_sections(), indent=2) + "\n")
    trainer = SpeechTrainer(model, config.training, train_loader, eval_loader, processor)
    return trainer.train(resume_from_checkpoint=resume)


def evaluate_dataset(
    model,
    processor,
    dataset,
    output_dir: Path,
    num_beams: int = 1,
    batch_size: int = 8,
    title: str = "Evaluation",
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """Transcribe ``dataset`` (a ``SpeechDataset``) and write the evaluation files; returns the metrics.

    Decoding is ``transcribe_audio`` (the PyTorch reference); ``max_new_tokens`` bounds runaway
    (hallucinating) outputs, None leaves the model's own limit.
    """
    from tqdm.auto import tqdm

    from training.metrics import create_evaluation_report, evaluate_model
    from training.transcribe import transcribe_audio
    from whisper_triton.constants import SAMPLE_RATE

    ids, references, predictions, durations = [], [], [], []
    with tqdm(total=len(dataset), desc="transcribing", unit="utt") as progress:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            audios = [item["audio"] for item in items]
            predictions += transcribe_audio(
                model,
                processor,
                audios,
                num_beams=num_beams,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
            )
            ids += [item["id"] for item in items]
            references += [item["text"] for item in items]
            durations += [len(audio) / SAMPLE_RATE for audio in audios]
            progress.update(len(items))
    metrics = evaluate_model(predictions, references, output_dir, ids=ids, durations=durations)
    metrics["files"]["report_md"] = str(
        create_evaluation_report(metrics, output_dir / "report.md", title=title)
    )
    return metrics


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from training.data import load_speech_dataset
    from training.modeling import create_whisper_model_and_processor

    for name in ("beam_size", "batch_size", "limit", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DataError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    config = DataConfig(data_dir=args.data_dir, lowercase=args.lowercase)
    dataset = load_speech_dataset(args.data, config, train=False, limit=args.limit)
    output = args.output or Path("eval-results") / f"{_slug(args.model)}_{_slug(args.data)}"
    model, processor = create_whisper_model_and_processor(args.model)
    started = time.perf_counter()
    metrics = evaluate_dataset(
        model,
        processor,
        dataset,
        output,
        args.beam_size,
        args.batch_size,
        title=f"{args.model} on {args.data}",
        max_new_tokens=args.max_new_tokens,
    )
    print(
        f"{metrics['num_utterances']} utterances in {time.perf_counter() - started:.1f} s: "
        f"WER {100 * metrics['wer']:.2f} %, CER {100 * metrics['cer']:.2f} %\nreport: {metrics['files']['report_md']}"
    )
    return metrics


def _slug(text: str) -> str:
    """A folder-name-safe version of a model name or data path."""
    return (
        re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(text).rstrip("/")).name or str(text)).strip("-") or "data"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("train", "evaluate", "-h", "--help"):
        argv.insert(0, "train")  # `python -m training --config train.json`: train is the default command
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)  # our progress notes; other libraries stay quiet
    try:
        if args.command == "evaluate":
            run_evaluate(args)
            return 0
        config = resolve_train_config(args)
        if args.print_config:
            print(json.dumps(config.to_sections(), indent=2))
            return 0
        metrics = run_train(config, resume=args.resume)
    except (ValueError, OSError) as error:
        # What the user can fix: options, data, model paths (TrainingArgumentsError, DataError,
        # ModelLoadError and ModelConfigError are ValueErrors), unreadable or unwritable files. One line,
        # no traceback.
        print(f"python -m training {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2, default=str))
    return 0
