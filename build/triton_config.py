"""Every config.pbtxt of the model repository, generated from the wire contract as ModelConfig protobufs.

Building the configs as ``tritonclient``'s ``ModelConfig`` messages validates field names and types by
construction; ``parse_config`` reads a written file back the same way (tests compare both with
``whisper_triton.contract``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from whisper_triton import contract
from whisper_triton.contract import TensorSpec
from whisper_triton.manifest import ModelManifest
from whisper_triton.serving import DEFAULT_LIMITS
from whisper_triton.windows import TARGET_SECONDS

RUNTIMES = ("python", "onnxruntime", "tensorrt")
ENCODER_MAX_WINDOWS = 20  # windows per encoder call: the TensorRT profile's maximum (build/tensorrt.py)
# Triton keeps this many times max_streams sequences as candidates of the streaming model. Past the
# candidates, Triton parks new sequences in a backlog that the model never sees (they would hang without an
# answer), so the cap must be enforced by the model, with room above it for the streams it refuses.
STREAM_CANDIDATES_PER_STREAM = 4


@dataclass(frozen=True)
class ServingSettings:
    runtime: str = "python"
    max_batch_size: int = 8  # requests the encoder/decoder batchers group into one execution
    max_queue_delay_us: int = 5000  # how long a request waits for others to batch with (5 ms)
    max_audio_seconds: float = DEFAULT_LIMITS.max_seconds  # longer requests are rejected with a clear error
    max_audio_bytes: int = DEFAULT_LIMITS.max_bytes  # larger AUDIO_BYTES uploads are rejected before parsing
    decoder_memory_mb: int = 1024  # self-attention cache and logits of one decoder batch, at most
    feature_instances: int = 2  # feature extraction is per request: parallel instances keep up
    decoder_instances: int = 2  # a long request decodes in one; the others keep serving (bench_fairness.py)
    threads: int = 2  # intra-op threads of each ONNX Runtime session (this machine has 2 cores)
    max_streams: int = 8  # live streams of whisper_stream at most; a new one past it is refused
    stream_idle_seconds: float = 30.0  # a stream without a chunk for this long is dropped, its state freed
    stream_trim_seconds: float = 10.0  # a stream's buffer is cut at a committed segment end past this length

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        for name in (
            "max_batch_size",
            "max_audio_bytes",
            "decoder_memory_mb",
            "feature_instances",
            "decoder_instances",
            "threads",
            "max_streams",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if not self.max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be above 0, got {self.max_audio_seconds}")
        if not self.stream_idle_seconds > 0:
            raise ValueError(f"stream_idle_seconds must be above 0, got {self.stream_idle_seconds}")
        if not 0 <= self.stream_trim_seconds <= 30:
            raise ValueError(f"stream_trim_seconds must be in [0, 30], got {self.stream_trim_seconds}")


def _tensor(message_type, spec: TensorSpec):
    tensor = message_type(name=spec.name, data_type=mc.DataType.Value(spec.data_type), dims=list(spec.dims))
    if spec.optional:
        tensor.optional = True
    return tensor


def _python_model(
    name: str,
    inputs,
    outputs,
    parameters: dict[str, str],
    max_batch_size: int,
    instances: int,
    settings,
    kind=mc.ModelInstanceGroup.KIND_CPU,
):
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    config.input.extend(_tensor(mc.ModelInput, spec) for spec in inputs)
    config.output.extend(_tensor(mc.ModelOutput, spec) for spec in outputs)
    config.instance_group.append(mc.ModelInstanceGroup(kind=kind, count=instances))
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    if max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    return config


def model_configs(manifest: ModelManifest, settings: ServingSettings) -> dict[str, mc.ModelConfig]:
    """The ModelConfig of each model in the repository, keyed by model name."""
    n_frames = 2 * manifest.n_audio_ctx  # the encoder's stride-2 convolution halves the mel frames
    threads = {"threads": str(settings.threads)}
    windows = str(max_windows(settings.max_audio_seconds))
    features = _python_model(
        contract.FEATURES_MODEL,
        contract.ensemble_inputs(),
        contract.features_outputs(manifest.n_mels, n_frames),
        {
            "max_audio_seconds": str(settings.max_audio_seconds),
            "max_audio_bytes": str(settings.max_audio_bytes),
        },
        0,
        settings.feature_instances,
        settings,
    )
    encoder_inputs = contract.encoder_inputs(manifest.n_mels, n_frames)
    encoder_outputs = contract.encoder_outputs(manifest.n_audio_ctx, manifest.d_model)
    if settings.runtime == "python":
        encoder = _python_model(
            contract.ENCODER_MODEL,
            encoder_inputs,
            encoder_outputs,
            {**threads, "n_mels": str(manifest.n_mels), "n_frames": str(n_frames), "max_windows": windows},
            settings.max_batch_size,
            1,
            settings,
        )
    else:
        platform = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}[settings.runtime]
        encoder = mc.ModelConfig(
            name=contract.ENCODER_MODEL, platform=platform, max_batch_size=settings.max_batch_size
        )
        # The ONNX/TensorRT input and output names are the graph's own; Triton maps by name.
        encoder.input.append(
            mc.ModelInput(name="input_features", data_type=mc.TYPE_FP32, dims=list(encoder_inputs[0].dims))
        )
        encoder.output.append(
            mc.ModelOutput(name="encoder_output", data_type=mc.TYPE_FP32, dims=list(encoder_outputs[0].dims))
        )
        kind = (
            mc.ModelInstanceGroup.KIND_GPU
            if settings.runtime == "tensorrt"
            else mc.ModelInstanceGroup.KIND_AUTO
        )
        encoder.instance_group.append(mc.ModelInstanceGroup(kind=kind, count=1))
        encoder.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    # With TensorRT the decoding model runs its engines on a GPU: Triton gives each instance a device.
    encoder_names = _encoder_tensor_names(settings)
    decoder = _python_model(
        contract.DECODER_MODEL,
        contract.decoder_inputs(manifest.n_audio_ctx, manifest.d_model, manifest.n_mels, n_frames),
        contract.decoder_outputs(),
        {
            **threads,
            "max_decoder_rows": str(max_decoder_rows(manifest, settings.decoder_memory_mb)),
            "encoder_input": encoder_names[0],
            "encoder_output": encoder_names[1],
            "encoder_max_windows": str(ENCODER_MAX_WINDOWS),
            "max_windows": windows,
        },
        settings.max_batch_size,
        settings.decoder_instances,
        settings,
        kind=mc.ModelInstanceGroup.KIND_GPU
        if settings.runtime == "tensorrt"
        else mc.ModelInstanceGroup.KIND_CPU,
    )
    return {
        contract.FEATURES_MODEL: features,
        contract.ENCODER_MODEL: encoder,
        contract.DECODER_MODEL: decoder,
        contract.ENSEMBLE_MODEL: _ensemble(settings),
        contract.STREAM_MODEL: _stream(settings, encoder_names),
    }


def max_windows(max_audio_seconds: float) -> int:
    """Windows one request can have: pieces merge up to TARGET_SECONDS, so two consecutive windows span
    more than that (only a short piece that did not fit starts a new one) and the last may be short."""
    return 2 * math.ceil(max_audio_seconds / TARGET_SECONDS) + 1


def _stream(settings: ServingSettings, encoder_names: tuple[str, str]) -> mc.ModelConfig:
    """``whisper_stream`` under Triton's sequence batcher, Oldest strategy: chunks of different streams
    are batched into one execution (so their encoder and decoder calls batch too), while the chunks of one
    stream reach the model in order. Not decoupled: each chunk gets exactly one response, which gRPC
    streaming and plain HTTP/gRPC requests both carry."""
    config = mc.ModelConfig(
        name=contract.STREAM_MODEL, backend="python", max_batch_size=settings.max_batch_size
    )
    config.input.extend(_tensor(mc.ModelInput, spec) for spec in contract.stream_inputs())
    config.input[0].allow_ragged_batch = True  # chunks of any length batch together (the last is shorter)
    config.output.extend(_tensor(mc.ModelOutput, spec) for spec in contract.stream_outputs())
    config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1))
    batching = config.sequence_batching
    # Triton frees a sequence after this much time without a queued request; the model reads the same
    # value from its config and frees its own state of the stream then too.
    batching.max_sequence_idle_microseconds = round(settings.stream_idle_seconds * 1e6)
    for name, kind in contract.stream_controls():
        control = batching.control_input.add(name=name).control.add()
        control.kind = mc.ModelSequenceBatching.Control.Kind.Value(kind)
        control.int32_false_true.extend([0, 1])
    batching.oldest.max_candidate_sequences = settings.max_streams * STREAM_CANDIDATES_PER_STREAM
    batching.oldest.max_queue_delay_microseconds = settings.max_queue_delay_us
    parameters = {
        "max_streams": str(settings.max_streams),
        "trim_seconds": str(settings.stream_trim_seconds),
        "encoder_input": encoder_names[0],
        "encoder_output": encoder_names[1],
    }
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def max_decoder_rows(manifest: ModelManifest, memory_mb: int) -> int:
    """Decoder rows (windows x beams) whose self-attention cache at full length and per-step logits fit
    in ``memory_mb``: tiny.en 5.6 MB a row (182 rows in 1 GB), large-v3 147 MB (6 rows)."""
    cache = 2 * manifest.decoder_layers * manifest.n_text_ctx * manifest.d_model * 4  # keys + values, float32
    logits = 3 * manifest.n_vocab * 4  # logits, log-probabilities and the filtered copy
    return max(1, memory_mb * 2**20 // (cache + logits))


def _encoder_tensor_names(settings: ServingSettings) -> tuple[str, str]:
    """The encoder model's input and output names: a Python model's are ours, an ONNX or TensorRT model's
    the graph's own (Triton maps them by name)."""
    if settings.runtime == "python":
        return contract.INPUT_FEATURES, contract.ENCODER_OUTPUT
    return "input_features", "encoder_output"


def _ensemble(settings: ServingSettings) -> mc.ModelConfig:
    encoder_in, encoder_out = _encoder_tensor_names(settings)
    config = mc.ModelConfig(name=contract.ENSEMBLE_MODEL, platform="ensemble", max_batch_size=0)
    config.input.extend(_tensor(mc.ModelInput, spec) for spec in contract.ensemble_inputs())
    config.output.extend(_tensor(mc.ModelOutput, spec) for spec in contract.ensemble_outputs())
    steps = [
        (
            contract.FEATURES_MODEL,
            {name: name for name in (contract.AUDIO, contract.AUDIO_BYTES, contract.OPTIONS)},
            {
                contract.INPUT_FEATURES: "features",
                contract.WINDOWS: "windows",
                contract.DECODE_OPTIONS: "options",
            },
        ),
        (contract.ENCODER_MODEL, {encoder_in: "features"}, {encoder_out: "states"}),
        (
            contract.DECODER_MODEL,
            {
                contract.ENCODER_OUTPUT: "states",
                contract.INPUT_FEATURES: "features",
                contract.WINDOWS: "windows",
                contract.DECODE_OPTIONS: "options",
            },
            {contract.TEXT: contract.TEXT, contract.SEGMENTS: contract.SEGMENTS},
        ),
    ]
    for model_name, inputs, outputs in steps:
        step = config.ensemble_scheduling.step.add(model_name=model_name, model_version=-1)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    return config


def write_config(config: mc.ModelConfig, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def parse_config(path: str | Path) -> mc.ModelConfig:
    """Read a config.pbtxt back into a ModelConfig (raises on any unknown field or bad value)."""
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())
