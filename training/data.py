"""Speech data for fine-tuning: where a split comes from, a Dataset that loads and augments audio, the collator.

Where a split comes from (``load_speech_dataset``), first match wins:

1. ``split`` is itself a path: a folder in LibriSpeech layout (``speaker/chapter/*.flac`` with
   ``speaker-chapter.trans.txt``), or a JSONL / CSV manifest of (audio path, text).
2. ``DataConfig.data_dir/<split>`` (or ``data_dir/LibriSpeech/<split>``, as the openslr tarballs unpack)
   exists: the same readers. Without ``data_dir``, the folder named by ``$WHISPER_TRITON_DATA_DIR``.
3. ``split`` is a LibriSpeech split name (``train-clean-100``, ``dev-clean``, ...): the Hugging Face hub
   dataset ``openslr/librispeech_asr``, unless ``HF_HUB_OFFLINE`` is set.

The hub dataset's own split names (``train.100``, ``validation.clean``, ``test.other``, ... as the API
document writes them) name the same LibriSpeech splits: ``train.100`` is looked up as
``train-clean-100`` in steps 2 and 3.

Local folders and manifests are read by ``training.utterances``. LibriSpeech's own transcripts are upper
case without punctuation (``DataConfig.lowercase`` lower-cases them).

Whisper sees one 30-second window, so longer utterances are dropped (their transcript would not match
the audio the encoder sees) and label sequences are cut to the decoder's 448 positions; both are logged
as warnings with counts. Missing audio files and empty transcripts are errors that name file and line.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import torch

from training.arguments import documented
from training.model_config import MAX_TARGET_POSITIONS
from training.utterances import (
    DataError,
    Utterance,
    filter_by_duration,
    list_utterances,
    load_utterance_audio,
    resolve_local_split,
    split_candidates,
)
from whisper_triton.audio import AudioError, load_audio
from whisper_triton.constants import CHUNK_LENGTH, SAMPLE_RATE
from whisper_triton.features import transcription_features
from whisper_triton.paths import hub_offline

logger = logging.getLogger(__name__)

LIBRISPEECH_HUB_ID = "openslr/librispeech_asr"  # the canonical id; "librispeech_asr" redirects to it
# LibriSpeech split names (the openslr folder names) -> (hub config, hub split).
LIBRISPEECH_SPLITS = {
    "train-clean-100": ("clean", "train.100"),
    "train-clean-360": ("clean", "train.360"),
    "train-other-500": ("other", "train.500"),
    "dev-clean": ("clean", "validation"),
    "dev-other": ("other", "validation"),
    "test-clean": ("clean", "test"),
    "test-other": ("other", "test"),
}
# The hub dataset's split names (its "clean"/"other" configs, and the "all" config's dotted names) ->
# LibriSpeech's folder names, which local copies and LIBRISPEECH_SPLITS use.
HUB_SPLIT_NAMES = {
    "train.100": "train-clean-100",
    "train.360": "train-clean-360",
    "train.500": "train-other-500",
    "train.clean.100": "train-clean-100",
    "train.clean.360": "train-clean-360",
    "train.other.500": "train-other-500",
    "validation.clean": "dev-clean",
    "validation.other": "dev-other",
    "test.clean": "test-clean",
    "test.other": "test-other",
}
# The hub's config names; "validation" and "test" alone name a split only with "clean" or "other".
LIBRISPEECH_CONFIGS = ("clean", "other", "all")
DATA_DIR_ENV = "WHISPER_TRITON_DATA_DIR"  # where splits are looked up when DataConfig.data_dir is unset


@dataclass(frozen=True)
class AugmentationConfig:
    """On-the-fly waveform augmentation of training utterances (``training.augmentation.augment_audio``).

    Each time an utterance is read it is augmented with ``probability``; then every enabled transform is
    applied with a parameter drawn uniformly from its range. None disables a transform.
    """

    probability: float = 0.5  # share of reads that are augmented; the rest see the clean audio
    time_stretch: tuple[float, float] | None = (0.9, 1.1)  # speed factor (>1 is faster)
    pitch_shift: tuple[float, float] | None = (-2.0, 2.0)  # semitones
    noise_level: tuple[float, float] | None = (0.001, 0.01)  # RMS of added white noise, full-scale units

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise DataError(f"augment.probability must be in [0, 1], got {self.probability!r}")
        for name in ("time_stretch", "pitch_shift", "noise_level"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != 2 or not value[0] <= value[1]:
                raise DataError(f"augment.{name} must be a [low, high] range or null, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        if self.time_stretch is not None and self.time_stretch[0] <= 0:
            raise DataError(f"augment.time_stretch factors must be > 0, got {self.time_stretch}")
        if self.noise_level is not None and self.noise_level[0] < 0:
            raise DataError(f"augment.noise_level must be >= 0, got {self.noise_level}")

    def sample(self, rng: np.random.Generator, num_samples: int, max_samples: int) -> dict[str, Any] | None:
        """``augment_audio`` keyword arguments for one read, or None to leave the audio as it is."""
        if rng.random() >= self.probability:
            return None
        kwargs: dict[str, Any] = {}
        if self.time_stretch is not None:
            factor = rng.uniform(*self.time_stretch)
            if num_samples / factor <= max_samples:  # slowing down must not push speech past the window
                kwargs["time_stretch_factor"] = factor
        if self.pitch_shift is not None:
            kwargs["pitch_shift_steps"] = rng.uniform(*self.pitch_shift)
        if self.noise_level is not None:
            kwargs.update(add_noise=True, noise_level=rng.uniform(*self.noise_level))
        return kwargs


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is prepared."""

    data_dir: str | None = documented(
        "folder holding the splits: DIR/<split>/ (LibriSpeech layout), DIR/LibriSpeech/<split>/ or "
        f"DIR/<split>.jsonl|csv (default: ${DATA_DIR_ENV} when set)",
        default=None,
    )
    max_duration_s: float = documented(
        "drop utterances longer than this many seconds (Whisper encodes one 30 s window)",
        default=float(CHUNK_LENGTH),
    )
    max_label_tokens: int = documented(
        f"cut label sequences to this many tokens (at most the decoder's {MAX_TARGET_POSITIONS} positions)",
        default=MAX_TARGET_POSITIONS,
    )
    augment: AugmentationConfig | None = documented(
        "augment training audio on the fly (time stretch, pitch shift, noise); in JSON an object of "
        "AugmentationConfig ranges or true for the defaults",
        default=None,
    )
    lowercase: bool = documented(
        "lower-case transcripts (LibriSpeech's are upper case; Whisper writes mixed case)", default=False
    )
    seed: int = documented("seed of the augmentation parameters", default=0)
    num_workers: int = documented("DataLoader worker processes (audio decoding and augmentation)", default=0)
    max_train_samples: int | None = documented("use only the first N training utterances", default=None)
    max_eval_samples: int | None = documented("evaluate on only the first N eval utterances", default=None)
    eval_batch_size: int | None = documented(
        "utterances per eval batch (default: the training batch size)", default=None
    )
    hub_dataset: str = documented(
        "Hugging Face dataset for LibriSpeech split names", default=LIBRISPEECH_HUB_ID
    )
    cache_dir: str | None = documented("Hugging Face datasets cache folder (default: its own)", default=None)

    def __post_init__(self):
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentationConfig(**self.augment))
        elif self.augment is True:
            object.__setattr__(self, "augment", AugmentationConfig())
        elif self.augment is False:
            object.__setattr__(self, "augment", None)
        if not self.max_duration_s > 0:
            raise DataError(f"max_duration_s must be > 0, got {self.max_duration_s!r}")
        if not 2 <= self.max_label_tokens <= MAX_TARGET_POSITIONS:
            raise DataError(
                f"max_label_tokens must be in 2..{MAX_TARGET_POSITIONS}, got {self.max_label_tokens!r}"
            )
        for name in ("max_train_samples", "max_eval_samples", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise DataError(f"{name} must be a positive integer or null, got {value!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise DataError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "data config") -> DataConfig:
        """Build from a JSON object, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DataError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as error:  # AugmentationConfig(**{"typo": ...})
            raise DataError(f"{source}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- datasets ----


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances as ``{"id", "audio" (16 kHz float32), "text"}`` items, augmented on the fly if asked.

    Augmentation parameters come from a generator seeded by (``seed``, item index, a draw from torch's
    RNG): the Trainer seeds torch's RNG (and restores it on resume), so a run is reproducible, while each
    epoch and each DataLoader worker draws different parameters.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        augment: AugmentationConfig | None = None,
        seed: int = 0,
        lowercase: bool = False,
        max_duration_s: float = float(CHUNK_LENGTH),
    ):
        self.utterances = list(utterances)
        self.augment = augment
        self.seed = seed
        self.lowercase = lowercase
        self.max_samples = int(max_duration_s * SAMPLE_RATE)

    def __len__(self) -> int:
        return len(self.utterances)

    def _read(self, index: int) -> tuple[str, np.ndarray, str]:
        utt = self.utterances[index]
        return utt.id, load_utterance_audio(utt.audio_filepath), utt.text

    def __getitem__(self, index: int) -> dict[str, Any]:
        utt_id, audio, text = self._read(index)
        if self.augment is not None:
            from training.augmentation import augment_audio

            rng = np.random.default_rng([self.seed, index, int(torch.randint(2**31, ()))])
            kwargs = self.augment.sample(rng, len(audio), self.max_samples)
            if kwargs is not None:
                audio = augment_audio(audio, SAMPLE_RATE, seed=rng, **kwargs)
        return {"id": utt_id, "audio": audio, "text": text.lower() if self.lowercase else text}


class HubSpeechDataset(SpeechDataset):
    """LibriSpeech rows of a Hugging Face ``datasets.Dataset``, audio decoded by ``load_audio``."""

    def __init__(self, rows, indices: Sequence[int], **kwargs):
        super().__init__([], **kwargs)
        self.rows = rows
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, index: int) -> tuple[str, np.ndarray, str]:
        row = self.rows[self.indices[index]]
        try:
            audio = load_audio(row["audio"]["bytes"] or row["audio"]["path"])
        except AudioError as error:
            raise DataError(f"{row['id']}: {error}") from error
        return str(row["id"]), audio, row["text"]


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a connection (datasets would retry for ~20 s otherwise)."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _load_hub_split(split: str, config: DataConfig, limit: int | None, **kwargs) -> HubSpeechDataset:
    """A LibriSpeech split from the Hugging Face hub, or only from the datasets cache with HF_HUB_OFFLINE."""
    local_hint = _local_hint(split, data_root(config))
    offline = hub_offline()
    if not offline and not _hub_reachable():
        raise DataError(
            f"LibriSpeech {split} is not local and the Hugging Face hub is unreachable; {local_hint}, "
            "or set HF_HUB_OFFLINE=1 to use a copy in the datasets cache"
        )
    import datasets

    name, hub_split = LIBRISPEECH_SPLITS[split]
    try:
        rows = datasets.load_dataset(config.hub_dataset, name, split=hub_split, cache_dir=config.cache_dir)
    except Exception as error:  # noqa: BLE001 - network, cache, auth and format failures all mean "not available"
        where = "the datasets cache (HF_HUB_OFFLINE is set)" if offline else "the Hugging Face hub"
        raise DataError(
            f"cannot load LibriSpeech {split} ({config.hub_dataset} {name}/{hub_split}) from {where}: "
            f"{type(error).__name__}: {error}; {local_hint}"
        ) from error
    return hub_speech_dataset(rows, config.max_duration_s, limit, name=split, **kwargs)


def _local_hint(split: str, root: str | None) -> str:
    """What to do so that ``split`` is found locally, naming the places that were looked at."""
    if root is None:
        return (
            f"no data_dir is given and ${DATA_DIR_ENV} is not set: put the split at DATA_DIR/{split}/ in "
            f"LibriSpeech layout and pass DataConfig(data_dir=DATA_DIR) or set {DATA_DIR_ENV}=DATA_DIR"
        )
    looked = ", ".join(str(path) for path in split_candidates(split, root)[1:])
    return (
        f"put the split at DATA_DIR/{split}/ in LibriSpeech layout (data_dir={root!r}; looked for {looked})"
    )


def hub_speech_dataset(
    rows, max_duration_s: float, limit: int | None = None, name: str = "hub split", **kwargs
):
    """A ``HubSpeechDataset`` over a ``datasets.Dataset`` with LibriSpeech's ``id``/``audio``/``text`` columns.

    Utterances longer than ``max_duration_s`` are dropped (with a counted warning); ``limit`` keeps the
    first N that remain.
    """
    import datasets

    # Decode with load_audio (soundfile/PyAV) instead of datasets' torchcodec dependency.
    rows = rows.cast_column("audio", datasets.Audio(decode=False))
    indices, too_long, count = [], 0, 0
    for index, audio in enumerate(rows["audio"]):
        if limit is not None and count >= limit:
            break
        if sf.info(_audio_source(audio)).duration > max_duration_s:
            too_long += 1
            continue
        indices.append(index)
        count += 1
    if too_long:
        logger.warning("%s: dropped %d utterances longer than %.1f s", name, too_long, max_duration_s)
    if not indices:
        raise DataError(f"{name}: no utterance of at most {max_duration_s} s")
    return HubSpeechDataset(rows, indices, **kwargs)


def _audio_source(audio: dict):
    """What soundfile/load_audio read for an undecoded ``datasets.Audio`` value: its bytes, else its path."""
    return io.BytesIO(audio["bytes"]) if audio.get("bytes") else audio["path"]


def data_root(config: DataConfig) -> str | None:
    """The folder splits are looked up in: ``config.data_dir``, else ``$WHISPER_TRITON_DATA_DIR``."""
    return config.data_dir or os.environ.get(DATA_DIR_ENV) or None


def load_speech_dataset(
    split: str, config: DataConfig, train: bool = False, limit: int | None = None
) -> SpeechDataset:
    """The dataset of ``split`` (see the module docstring for where it is looked up).

    ``train`` enables ``config.augment``; ``limit`` keeps the first N utterances (after length filtering).
    """
    kwargs = dict(
        augment=config.augment if train else None,
        seed=config.seed,
        lowercase=config.lowercase,
        max_duration_s=config.max_duration_s,
    )
    root = data_root(config)
    # The name as given first (a folder may well be called "train.100"), then as LibriSpeech spells it.
    name = HUB_SPLIT_NAMES.get(split, split)
    local = resolve_local_split(split, root) or resolve_local_split(name, root)
    if local is None:
        if name not in LIBRISPEECH_SPLITS:
            raise DataError(
                f"split {split!r} is neither a path, nor found under data_dir={root!r}, nor a LibriSpeech "
                f"split name ({', '.join(LIBRISPEECH_SPLITS)}, or the hub's {', '.join(HUB_SPLIT_NAMES)})"
            )
        return _load_hub_split(name, config, limit, **kwargs)
    utterances = list_utterances(local)
    if not utterances:
        raise DataError(f"{local} lists no utterances")
    utterances = filter_by_duration(utterances, config.max_duration_s, str(local))
    return SpeechDataset(utterances[:limit] if limit else utterances, **kwargs)


def create_speech_dataloaders(
    train_split: str | None, eval_split: str | None, config: DataConfig, batch_size: int, collate_fn
) -> tuple[torch.utils.data.DataLoader | None, torch.utils.data.DataLoader | None]:
    """``(train_loader, eval_loader)`` over the two splits; a loader is None when its split is None.

    The training loader shuffles (torch's RNG, which the Trainer seeds) and augments per ``config.augment``;
    the evaluation loader keeps the listed order and never augments.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if train_split is None and eval_split is None:
        raise DataError("give a train_split, an eval_split or both")
    loader_options = dict(
        collate_fn=collate_fn, num_workers=config.num_workers, persistent_workers=config.num_workers > 0
    )
    train_loader = eval_loader = None
    if train_split is not None:
        train = load_speech_dataset(train_split, config, train=True, limit=config.max_train_samples)
        train_loader = torch.utils.data.DataLoader(
            train, batch_size=batch_size, shuffle=True, **loader_options
        )
    if eval_split is not None:
        evaluation = load_speech_dataset(eval_split, config, train=False, limit=config.max_eval_samples)
        eval_loader = torch.utils.data.DataLoader(
            evaluation, batch_size=config.eval_batch_size or batch_size, shuffle=False, **loader_options
        )
    logger.info(
        "data: %d training utterances (%s), %d evaluation utterances (%s)",
        len(train_loader.dataset) if train_loader else 0,
        train_split,
        len(eval_loader.dataset) if eval_loader else 0,
        eval_split,
    )
    return train_loader, eval_loader


def create_librispeech_dataloaders(
    train_split: str | None,
    eval_split: str | None,
    config: DataConfig | str | None,
    batch_size: int,
    collate_fn,
) -> dict[str, torch.utils.data.DataLoader | None]:
    """``{"train": loader, "eval": loader}``, as the API document writes it (``create_speech_dataloaders``
    gives the same loaders as a tuple).

    Splits take every form ``load_speech_dataset`` accepts, the hub dataset's names (``train.100``,
    ``validation.clean``, ``test.other``, ...) included; None leaves that loader out (None). ``config``
    is a ``DataConfig``, or the hub's config name ("clean", "other" or "all", which tells what the bare
    ``validation``/``test`` mean) with every other option at its default: data in
    ``$WHISPER_TRITON_DATA_DIR``, else on the hub.
    """
    data_config, librispeech_config = _data_config(config)
    train_split, eval_split = (
        _with_subset(split, librispeech_config, data_config) for split in (train_split, eval_split)
    )
    train, evaluation = create_speech_dataloaders(
        train_split, eval_split, data_config, batch_size, collate_fn
    )
    return {"train": train, "eval": evaluation}


def _with_subset(split: str | None, librispeech_config: str | None, config: DataConfig) -> str | None:
    """The hub's bare split names made explicit by its config: ("validation", "clean") -> "validation.clean".

    A local folder or manifest of that very name stays what it is.
    """
    if split not in ("validation", "test") or resolve_local_split(split, data_root(config)) is not None:
        return split
    if librispeech_config not in ("clean", "other"):
        raise DataError(
            f"split {split!r} names a LibriSpeech split only with config 'clean' or 'other' "
            f"(got {librispeech_config!r}); or write {split}.clean / {split}.other"
        )
    return f"{split}.{librispeech_config}"


def _data_config(config: DataConfig | str | None) -> tuple[DataConfig, str | None]:
    """(DataConfig, the hub's config name or None) from what ``create_librispeech_dataloaders`` was given."""
    if config is None or isinstance(config, DataConfig):
        return config or DataConfig(), None
    if isinstance(config, str):
        if config not in LIBRISPEECH_CONFIGS:
            raise DataError(
                f"config {config!r} is not a LibriSpeech config; give one of {LIBRISPEECH_CONFIGS} or a DataConfig"
            )
        return DataConfig(), config
    raise DataError(f"config must be a DataConfig or a LibriSpeech config name, got {type(config).__name__}")


# ---- collator ----


class SpeechDataCollator:
    """Batches of dataset items -> ``{"input_features", "labels"}`` for ``WhisperForConditionalGeneration``.

    Features are ``transcription_features`` (the convention every transcription path of the project uses,
    so training and serving see the same input). Labels are the tokenizer's sequence
    ``<|startoftranscript|> <|notimestamps|> " text" <|endoftext|>`` without its first token: the model
    builds its decoder input by shifting the labels right behind ``decoder_start_token_id``
    (``<|startoftranscript|>``), so it reads ``SOT NOTS text`` and learns to predict ``NOTS text EOT``.
    Padding is -100, which the loss ignores. The text gets a leading space, as Whisper was trained.
    """

    def __init__(self, processor, max_label_tokens: int = MAX_TARGET_POSITIONS):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.n_mels = processor.feature_extractor.feature_size
        self.max_label_tokens = max_label_tokens
        self.decoder_start_token_id = self.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
        if self.tokenizer.prefix_tokens[:1] != [self.decoder_start_token_id]:
            raise ValueError(
                f"the tokenizer's prefix {self.tokenizer.convert_ids_to_tokens(self.tokenizer.prefix_tokens)} "
                "does not start with <|startoftranscript|>; is this a Whisper tokenizer?"
            )
        self.truncated = 0  # label sequences cut so far (reported in warnings)

    def label_ids(self, text: str, utt_id: str = "?") -> list[int]:
        """The label token ids of one transcript (see the class docstring)."""
        ids = self.tokenizer(" " + text.strip()).input_ids[1:]  # drop <|startoftranscript|>
        if len(ids) > self.max_label_tokens:
            # The end-of-text token goes too: the model must not learn to stop in mid-transcript.
            ids = ids[: self.max_label_tokens]
            self.truncated += 1
            logger.warning(
                "%s: label sequence truncated to %d tokens (%d truncated so far)",
                utt_id,
                self.max_label_tokens,
                self.truncated,
            )
        return ids

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        features = transcription_features([item["audio"] for item in items], n_mels=self.n_mels)
        labels = [self.label_ids(item["text"], item.get("id", "?")) for item in items]
        padded = torch.full((len(labels), max(map(len, labels))), -100, dtype=torch.long)
        for row, ids in enumerate(labels):
            padded[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return {"input_features": torch.from_numpy(np.ascontiguousarray(features)), "labels": padded}


def create_data_collator(processor, max_label_tokens: int = MAX_TARGET_POSITIONS) -> SpeechDataCollator:
    """The collator for ``processor``'s model (see ``SpeechDataCollator``)."""
    return SpeechDataCollator(processor, max_label_tokens)
