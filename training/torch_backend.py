"""The PyTorch reference for the shared decoding loop: transformers' own Whisper forward and KV cache.

``decode()`` run over this backend is what every serving path (ONNX, quantised, Triton) is compared
with; its greedy transcripts are in turn checked against transformers' ``generate``.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from whisper_triton.decoding import Decoder
from whisper_triton.manifest import manifest_from_model
from whisper_triton.transcriber import Transcriber


class TorchDecoderBackend:
    def __init__(self, model):
        self.model = model.eval()
        # transformers 5.x renamed the decoder's cache argument from past_key_values to cache (the old
        # name is removed in 5.40); pyproject allows any 5.x, so use whichever this version takes.
        parameters = inspect.signature(self.model.model.decoder.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"

    def cross_attention(self, encoder_output: np.ndarray):
        states = torch.from_numpy(np.ascontiguousarray(encoder_output))
        return states.to(device=self.model.device, dtype=self.model.dtype)

    def new_cache(self, batch: int):
        return None

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, cache, cross):
        # transformers' decoder wants the encoder states per row; the rows of a window are consecutive.
        states = cross.repeat_interleave(tokens.shape[0] // cross.shape[0], dim=0)
        out = self.model.model.decoder(
            input_ids=torch.from_numpy(tokens).to(self.model.device),
            encoder_hidden_states=states,
            use_cache=True,
            **{self._cache_argument: cache},
        )
        logits = self.model.proj_out(out.last_hidden_state)
        return logits.float().cpu().numpy(), out.past_key_values

    def select(self, cache, cross, rows: np.ndarray, windows: np.ndarray | None):
        if cache is not None:  # transformers keeps self- and cross-attention caches per row
            cache.reorder_cache(torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.model.device))
        if windows is None:
            return cache, cross
        return cache, cross[torch.from_numpy(np.asarray(windows, dtype=np.int64)).to(self.model.device)]


class TorchEncoder:
    def __init__(self, model):
        self.model = model

    @torch.inference_mode()
    def __call__(self, features: np.ndarray) -> np.ndarray:
        features = torch.from_numpy(features).to(device=self.model.device, dtype=self.model.dtype)
        return self.model.model.encoder(features).last_hidden_state.float().cpu().numpy()


def torch_transcriber(model, processor, vad=None) -> Transcriber:
    """A ``Transcriber`` running the shared decoding loop on the PyTorch model."""

    return Transcriber(TorchEncoder(model), torch_decoder(model, processor), vad)


def torch_decoder(model, processor) -> Decoder:
    """The shared decoding loop over the PyTorch model's decoder."""
    return Decoder(
        TorchDecoderBackend(model), manifest_from_model(model, processor), _HFTokenizer(processor.tokenizer)
    )


class _HFTokenizer:
    """The transformers tokenizer behind the small ``encode``/``decode`` interface of the decoding loop."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=False)
