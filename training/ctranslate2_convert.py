"""Convert a CTranslate2 (faster-whisper) Whisper directory into a transformers checkpoint.

A CTranslate2 model directory holds ``model.bin`` (every weight, in CTranslate2's binary format),
``config.json`` (suppressed tokens, alignment heads, language ids) and ``tokenizer.json``. This module
reads ``model.bin`` with numpy (no ctranslate2 import needed), maps the weights back onto transformers'
``WhisperForConditionalGeneration`` (undoing CTranslate2's fused QKV projections and its quantisation),
and writes a safetensors checkpoint with tokenizer, feature extractor and generation config.

The binary layout mirrors ``ctranslate2/specs/model_spec.py::_serialize``: a uint32 format version, the
spec name and revision, then for each variable its name, rank, dims, dtype id, byte count and raw bytes,
then (alias, target) name pairs. All integers are little-endian.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CT2_FILES = ("model.bin", "config.json", "tokenizer.json")
# dtype ids in the order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")
_MIN_BINARY_VERSION = 5  # the version that added dtype ids and aliases (CTranslate2 >= 3.0)
_TIMESTAMP_STEP = 0.02  # seconds per timestamp token, "<|0.00|>", "<|0.02|>", ...


class CTranslate2FormatError(ValueError):
    """``model.bin`` or its directory is not a CTranslate2 Whisper model we can read."""


@dataclass(frozen=True)
class CTranslate2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]


def is_ctranslate2_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def read_ctranslate2_model(model_dir: str | Path) -> CTranslate2Model:
    """Every variable of ``model_dir/model.bin`` as a numpy array (aliases resolved, data copied)."""
    path = Path(model_dir) / "model.bin"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CTranslate2FormatError(f"cannot read {path}: {exc}") from exc
    reader = _Reader(data, path)
    try:
        version = reader.unpack("I")
        if version < _MIN_BINARY_VERSION:
            raise CTranslate2FormatError(
                f"{path}: CTranslate2 binary version {version} is too old (need >= {_MIN_BINARY_VERSION}); "
                "re-convert the model with a current ctranslate2"
            )
        spec = reader.string()
        revision = reader.unpack("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(reader.unpack("I")):
            name = reader.string()
            shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
            dtype_id = reader.unpack("B")
            raw = reader.take(reader.unpack("I"))
            variables[name] = _to_array(raw, dtype_id, shape, name, path)
        for _ in range(reader.unpack("I")):
            alias, target = reader.string(), reader.string()
            variables[alias] = variables[target]
    except (struct.error, UnicodeDecodeError, KeyError) as exc:
        raise CTranslate2FormatError(f"{path} is truncated or corrupt: {exc}") from exc
    if reader.offset != len(data):
        raise CTranslate2FormatError(f"{path} has {len(data) - reader.offset} unexpected trailing bytes")
    return CTranslate2Model(spec=spec, revision=revision, variables=variables)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise struct.error(f"needs {size} bytes at offset {self.offset}, file has {len(self.data)}")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def string(self) -> str:
        # Length includes the NUL terminator that the writer appends.
        return self.take(self.unpack("H"))[:-1].decode("utf-8")


def _to_array(raw: bytes, dtype_id: int, shape: tuple[int, ...], name: str, path: Path) -> np.ndarray:
    if dtype_id >= len(_CT2_DTYPES):
        raise CTranslate2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
    dtype = _CT2_DTYPES[dtype_id]
    if dtype == "bfloat16":
        # bfloat16 is the upper half of a float32: widen by shifting the bits into place.
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        array = bits.view(np.float32)
    else:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).copy()
    expected = int(np.prod(shape)) if shape else 1
    if array.size != expected:
        raise CTranslate2FormatError(
            f"{path}: variable {name} has {array.size} values, shape {shape} needs {expected}"
        )
    return array.reshape(shape)


def _float_weight(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A weight as float32, dequantising int8/int16 weights with their per-row ``weight_scale``."""
    value = variables[name]
    if np.issubdtype(value.dtype, np.integer):
        scale = variables.get(name + "_scale")
        if scale is None:
            raise CTranslate2FormatError(f"quantised weight {name} has no {name}_scale")
        # CTranslate2 stores q = round(w * scale) with one scale per output row.
        scale = scale.astype(np.float32).reshape((-1,) + (1,) * (value.ndim - 1))
        return value.astype(np.float32) / scale
    return value.astype(np.float32)


def ctranslate2_state_dict(model: CTranslate2Model) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The transformers state dict of a CTranslate2 Whisper model, and its architecture dims."""
    if model.spec != "WhisperSpec":
        raise CTranslate2FormatError(f"expected a Whisper model (WhisperSpec), found spec {model.spec!r}")
    v = model.variables
    w = lambda name: _float_weight(v, name)  # noqa: E731 - a short local alias keeps the table readable
    d_model = v["encoder/conv1/weight"].shape[0]
    dims = dict(
        d_model=d_model,
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
    )
    state: dict[str, np.ndarray] = {}

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        state[f"{hf}.weight"] = w(f"{ct2}/weight")
        if bias:
            state[f"{hf}.bias"] = w(f"{ct2}/bias")

    def layer_norm(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = w(f"{ct2}/gamma")
        state[f"{hf}.bias"] = w(f"{ct2}/beta")

    def fused_projections(hf_prefix: str, ct2: str, names: tuple[str, ...]) -> None:
        # CTranslate2 concatenates the q/k/v (or k/v) projections along the output dimension; Whisper's
        # k_proj has no bias, so CTranslate2 stored zeros there, which we drop again.
        weights = np.split(w(f"{ct2}/weight"), len(names), axis=0)
        biases = np.split(w(f"{ct2}/bias"), len(names), axis=0)
        for name, weight, bias in zip(names, weights, biases, strict=True):
            state[f"{hf_prefix}.{name}.weight"] = weight
            if name != "k_proj":
                state[f"{hf_prefix}.{name}.bias"] = bias

    def ffn(hf: str, ct2: str) -> None:
        layer_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")

    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    state["model.encoder.embed_positions.weight"] = w("encoder/position_encodings/encodings")
    layer_norm("model.encoder.layer_norm", "encoder/layer_norm")
    for i in range(dims["encoder_layers"]):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        fused_projections(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        ffn(hf, ct2)

    state["model.decoder.embed_tokens.weight"] = w("decoder/embeddings/weight")
    state["model.decoder.embed_positions.weight"] = w("decoder/position_encodings/encodings")
    layer_norm("model.decoder.layer_norm", "decoder/layer_norm")
    for i in range(dims["decoder_layers"]):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        fused_projections(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        fused_projections(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
        ffn(hf, ct2)
    # proj_out shares the token embedding (CTranslate2 stores it as an alias): transformers ties them.
    return state, dims


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    count = 0
    while f"{stack}/layer_{count}/ffn/linear_0/weight" in variables:
        count += 1
    if count == 0:
        raise CTranslate2FormatError(f"no {stack} layers found in model.bin")
    return count


def convert_ctranslate2_to_transformers(model_dir: str | Path, output_dir: str | Path) -> Path:
    """Write a transformers checkpoint (safetensors) converted from a CTranslate2 Whisper directory.

    The result loads with ``WhisperForConditionalGeneration.from_pretrained`` and
    ``WhisperProcessor.from_pretrained``; returns ``output_dir``.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    model_dir, output_dir = Path(model_dir), Path(output_dir)
    missing = [name for name in CT2_FILES if not (model_dir / name).is_file()]
    if missing:
        raise CTranslate2FormatError(f"{model_dir} is not a CTranslate2 Whisper directory: missing {missing}")
    try:
        ct2_config = json.loads((model_dir / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise CTranslate2FormatError(f"{model_dir / 'config.json'} is not valid JSON: {exc}") from exc

    state, dims = ctranslate2_state_dict(read_ctranslate2_model(model_dir))
    processor = build_processor(model_dir / "tokenizer.json", dims["vocab_size"], dims["num_mel_bins"])
    config = _whisper_config(dims, processor.tokenizer)
    model = WhisperForConditionalGeneration(config)
    tensors = {name: torch.from_numpy(array) for name, array in state.items()}
    missing_keys, unexpected = model.load_state_dict(tensors, strict=False)
    # proj_out.weight is tied to the token embedding, so it is the one key the state dict may omit.
    missing_keys = [key for key in missing_keys if key != "proj_out.weight"]
    if missing_keys or unexpected:
        raise CTranslate2FormatError(
            f"{model_dir}: weights do not match WhisperForConditionalGeneration "
            f"(missing {missing_keys[:5]}, unexpected {unexpected[:5]})"
        )
    model.tie_weights()
    model.generation_config = build_generation_config(config, processor.tokenizer, ct2_config)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    logger.info("converted CTranslate2 model %s to %s", model_dir, output_dir)
    return output_dir


def build_processor(tokenizer_json: Path, vocab_size: int, num_mel_bins: int):
    """A ``WhisperProcessor`` from a tokenizers ``tokenizer.json`` and the model's feature size.

    CTranslate2 directories ship the tokenizer without the timestamp tokens; they are added back here
    ("<|0.00|>" ... "<|30.00|>") so that the tokenizer's length equals the model's vocabulary.
    """
    import shutil
    import tempfile

    from transformers import AddedToken, WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tokenizer_json, Path(tmp) / "tokenizer.json")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "WhisperTokenizer"}))
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    missing = vocab_size - len(tokenizer)
    if missing < 0:
        raise CTranslate2FormatError(
            f"tokenizer has {len(tokenizer)} tokens, more than the model's {vocab_size}"
        )
    if missing:
        tokenizer.add_tokens(
            [
                AddedToken(
                    f"<|{i * _TIMESTAMP_STEP:.2f}|>",
                    lstrip=False,
                    rstrip=False,
                    normalized=False,
                    special=False,
                )
                for i in range(missing)
            ]
        )
    feature_extractor = WhisperFeatureExtractor(feature_size=num_mel_bins)
    return WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def _whisper_config(dims: dict[str, int], tokenizer):
    from transformers import WhisperConfig

    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return WhisperConfig(
        **dims,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        tie_word_embeddings=True,
    )


def build_generation_config(config, tokenizer, ct2_config: dict):
    """Generation settings equivalent to the CTranslate2 model's: special ids, suppression, languages."""
    from transformers import GenerationConfig

    def token_id(token: str) -> int:
        return tokenizer.convert_tokens_to_ids(token)

    # openai/whisper: a model is multilingual iff its vocabulary has more than the English-only size.
    from training.model_config import ENGLISH_VOCAB_SIZE

    multilingual = config.vocab_size > ENGLISH_VOCAB_SIZE
    generation = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        prev_sot_token_id=token_id("<|startofprev|>"),
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,  # openai/whisper: first timestamp at most 1.0 s (50 * 0.02 s)
        return_timestamps=False,
    )
    if multilingual:
        lang_ids = ct2_config.get("lang_ids", [])
        generation.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids}
        generation.task_to_id = {task: token_id(f"<|{task}|>") for task in ("transcribe", "translate")}
    return generation
