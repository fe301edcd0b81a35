"""TensorRT execution of the exported graphs on a CUDA GPU: engines, the encoder and the decoder backend.

``--runtime tensorrt`` builds three engines from the ONNX graphs (``whisper_triton.build.tensorrt``): the encoder, served
by Triton's ``tensorrt_plan`` backend, and ``cross_kv.plan`` and ``decoder.plan``, which the decoding model
runs in-process through :class:`TensorRTDecoderBackend` (the decoder loop belongs inside one process,
never one inter-model call per token). The self-attention cache and the cross-attention keys and
values stay on the GPU between steps; only token ids go in and logits come out each step.

Needs the ``tensorrt`` package and torch with CUDA (the official Triton container plus ``pip install
tensorrt torch``); torch is imported lazily so that ``whisper_triton`` itself stays free of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from whisper_triton.manifest import ModelManifest

ENCODER_ENGINE = "encoder.plan"
CROSS_KV_ENGINE = "cross_kv.plan"
DECODER_ENGINE = "decoder.plan"


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing here."""


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when engines can be built and run here, else (False, why not)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            False,
            "the tensorrt Python package is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)",
        )
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (TensorRT tensors are allocated with torch)"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return True, ""


def _torch_dtype(trt_dtype):
    import tensorrt as trt
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    if trt_dtype not in table:
        raise TypeError(f"unsupported TensorRT tensor type {trt_dtype}")
    return table[trt_dtype]


class TensorRTEngine:
    """A deserialised engine run on torch CUDA tensors, inputs and outputs by name."""

    def __init__(self, engine_path: str | Path, device: int | None = None):
        available, reason = tensorrt_available()
        if not available:
            raise TensorRTUnavailable(f"cannot run a TensorRT engine: {reason}")
        import tensorrt as trt
        import torch

        self.device = torch.device("cuda", torch.cuda.current_device() if device is None else device)
        torch.cuda.set_device(self.device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT cannot deserialise {engine_path}")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self._dtypes = {n: _torch_dtype(self._engine.get_tensor_dtype(n)) for n in names}
        # TensorRT wants a non-null address even for an empty tensor (the decoder's cache on the first
        # step has length 0); any valid allocation will do.
        self._placeholder = torch.empty(1, device=self.device)
        self._bound: list = []

    def max_shape(self, name: str) -> tuple[int, ...]:
        """The largest shape of input ``name`` that the engine's optimisation profile accepts."""
        return tuple(self._engine.get_tensor_profile_shape(name, 0)[2])

    def bind(self, inputs: Mapping[str, object]) -> dict:
        """Set shapes and addresses for ``inputs`` (torch tensors); returns the freshly allocated outputs."""
        import torch

        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ValueError(f"TensorRT engine inputs missing: {sorted(missing)}")
        # Keep the converted inputs alive until the engine has run: it reads them by address.
        self._bound = []
        for name in self.inputs:
            tensor = inputs[name].to(self.device, self._dtypes[name]).contiguous()
            self._bound.append(tensor)
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, self._address(tensor))
        outputs = {}
        for name in self.outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self._context.set_tensor_address(name, self._address(outputs[name]))
        return outputs

    def execute(self) -> None:
        """Run the bound tensors and wait for the result.

        On torch's current stream, so it is ordered after the copies that produced the inputs.
        """
        import torch

        stream = torch.cuda.current_stream(self.device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log above)")
        stream.synchronize()

    def run(self, inputs: Mapping[str, object]) -> dict:
        outputs = self.bind(inputs)
        self.execute()
        return outputs

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """A one-input engine on a numpy array (in the engine's input layout), output as float32 numpy."""
        import torch

        (output,) = self.run({self.inputs[0]: torch.from_numpy(np.ascontiguousarray(array))}).values()
        return output.float().cpu().numpy()

    def _address(self, tensor) -> int:
        return tensor.data_ptr() if tensor.numel() else self._placeholder.data_ptr()


class TensorRTEncoder:
    """The encoder engine behind the ``Transcriber``'s encoder interface: windows ``[N, n_mels, 3000]`` in."""

    def __init__(self, engine_path: str | Path, device: int | None = None):
        self._engine = TensorRTEngine(engine_path, device)
        self._max_windows = self._engine.max_shape(self._engine.inputs[0])[1]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        windows = features.reshape(-1, *features.shape[-2:])
        states = np.concatenate(
            [
                self._engine(windows[start : start + self._max_windows][None])[0]
                for start in range(0, len(windows), self._max_windows)
            ]
        )
        return states.reshape(*features.shape[:-2], *states.shape[-2:])


class TensorRTDecoderBackend:
    """``DecoderBackend`` over the cross-K/V and decoder engines; caches and cross K/V stay on the GPU.

    ``cross_engine`` and ``decoder_engine`` are anything with the ``TensorRTEngine`` calls used here
    (``run`` on a dict of torch tensors, ``max_shape``). Batches larger than an engine's profile allows
    (many windows times beams) run in slices of whole windows. Caches (rows) and cross K/V (windows) have
    their batch on axis 1, as in ``OnnxDecoderBackend``.
    """

    def __init__(self, cross_engine, decoder_engine, manifest: ModelManifest, device):
        self.manifest = manifest
        self.device = device
        self._cross = cross_engine
        self._decoder = decoder_engine
        self._cross_rows = cross_engine.max_shape("encoder_output")[0]
        self._decoder_rows = decoder_engine.max_shape("tokens")[0]
        self._decoder_windows = decoder_engine.max_shape("cross_k")[1]

    @classmethod
    def from_directory(cls, directory: str | Path, manifest: ModelManifest, device: int | None = None):
        directory = Path(directory)
        cross = TensorRTEngine(directory / CROSS_KV_ENGINE, device)
        decoder = TensorRTEngine(directory / DECODER_ENGINE, cross.device.index)
        return cls(cross, decoder, manifest, cross.device)

    def cross_attention(self, encoder_output: np.ndarray):
        import torch

        states = torch.from_numpy(np.ascontiguousarray(encoder_output, dtype=np.float32)).to(self.device)
        parts = [self._cross.run({"encoder_output": part}) for part in states.split(self._cross_rows)]
        return (
            torch.cat([p["cross_k"] for p in parts], dim=1),
            torch.cat([p["cross_v"] for p in parts], dim=1),
        )

    def new_cache(self, batch: int):
        import torch

        heads = self.manifest.decoder_heads
        shape = (self.manifest.decoder_layers, batch, heads, 0, self.manifest.d_model // heads)
        empty = torch.zeros(shape, dtype=torch.float32, device=self.device)
        return empty, empty

    def step(self, tokens: np.ndarray, cache, cross):
        import torch

        tokens = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64)).to(self.device)
        per_window = tokens.shape[0] // cross[0].shape[1]
        if per_window > self._decoder_rows:
            raise ValueError(f"{per_window} rows per window exceed the decoder engine's {self._decoder_rows}")
        # Slices hold whole windows (all rows of a window read its one cross K/V).
        windows_per_call = max(1, min(self._decoder_rows // per_window, self._decoder_windows))
        parts = []
        for start in range(0, cross[0].shape[1], windows_per_call):
            windows = slice(start, start + windows_per_call)
            rows = slice(start * per_window, (start + windows_per_call) * per_window)
            parts.append(
                self._decoder.run(
                    {
                        "tokens": tokens[rows],
                        "self_k": cache[0][:, rows],
                        "self_v": cache[1][:, rows],
                        "cross_k": cross[0][:, windows],
                        "cross_v": cross[1][:, windows],
                    }
                )
            )
        logits = torch.cat([p["logits"] for p in parts]).float().cpu().numpy()
        keys = torch.cat([p["new_self_k"] for p in parts], dim=1)
        values = torch.cat([p["new_self_v"] for p in parts], dim=1)
        return logits, (keys, values)

    def select(self, cache, cross, rows: np.ndarray, windows: np.ndarray | None):
        import torch

        index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)
        cache = (cache[0].index_select(1, index), cache[1].index_select(1, index))
        if windows is None:
            return cache, cross
        keep = torch.from_numpy(np.asarray(windows, dtype=np.int64)).to(self.device)
        return cache, (cross[0].index_select(1, keep), cross[1].index_select(1, keep))
