"""Client library: transcribe audio through the `whisper` ensemble over gRPC or HTTP (tritonclient)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_triton import contract
from whisper_triton.options import DecodingOptions


@dataclass
class Transcription:
    text: str
    segments: list[dict]  # {"start": s, "end": s, "text": str}


class WhisperClient:
    """``WhisperClient("localhost:8001")`` (gRPC) or ``WhisperClient("localhost:8000", protocol="http")``."""

    def __init__(self, url: str = "localhost:8001", protocol: str = "grpc", timeout_s: float = 300.0):
        if protocol == "grpc":
            import tritonclient.grpc as module
        elif protocol == "http":
            import tritonclient.http as module
        else:
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self._module, self.protocol, self.timeout_s = module, protocol, timeout_s
        self._client = module.InferenceServerClient(url)

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(contract.ENSEMBLE_MODEL))
        except Exception:  # noqa: BLE001 - unreachable or not ready both mean "not ready"
            return False

    def transcribe(
        self, audio: np.ndarray | str | Path | bytes, options: DecodingOptions | dict | None = None
    ) -> Transcription:
        """Transcribe 16 kHz float32 PCM, an audio file path, or encoded file bytes.

        Files travel as they are (``AUDIO_BYTES``: a 10-minute FLAC is ~10 MB, its PCM 38 MB) and the
        server decodes them, so the client needs no audio decoder.
        """
        if isinstance(options, dict):
            options = DecodingOptions.from_dict(options)  # reject bad options before sending anything
        if isinstance(audio, (str, Path)):
            audio = Path(audio).read_bytes()
        inputs = []
        if isinstance(audio, (bytes, bytearray)):
            tensor = self._module.InferInput(contract.AUDIO_BYTES, [1], "BYTES")
            tensor.set_data_from_numpy(np.array([bytes(audio)], dtype=object))
        else:
            pcm = np.ascontiguousarray(audio, dtype=np.float32)
            tensor = self._module.InferInput(contract.AUDIO, list(pcm.shape), "FP32")
            tensor.set_data_from_numpy(pcm)
        inputs.append(tensor)
        if options is not None:
            tensor = self._module.InferInput(contract.OPTIONS, [1], "BYTES")
            tensor.set_data_from_numpy(np.array([options.to_json().encode()], dtype=object))
            inputs.append(tensor)
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        result = self._client.infer(contract.ENSEMBLE_MODEL, inputs, **kwargs)
        text = result.as_numpy(contract.TEXT).reshape(-1)[0].decode()
        segments = json.loads(result.as_numpy(contract.SEGMENTS).reshape(-1)[0].decode())
        return Transcription(text, segments)
