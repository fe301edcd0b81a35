"""Export a transformers Whisper model to three ONNX graphs that serve with a KV cache.

- ``encoder.onnx``: log-mel ``[B, windows, n_mels, 3000]`` -> encoder states ``[B, windows, 1500, d_model]``.
- ``cross_kv.onnx``: encoder states -> every decoder layer's cross-attention keys and values, split
  into heads. Computed once per 30-second window, never per token.
- ``decoder.onnx``: tokens ``[B, T]`` plus the self-attention cache ``[layers, B, heads, P, head_dim]`` (P = 0 on
  the first step, when T is the prompt length; T = 1 afterwards) and the cross K/V of the ``W`` windows
  (``B`` = ``W`` x rows per window: beams or samples) -> logits ``[B, T, vocab]`` and the cache grown to P + T.

The decoder graph is our own module over the model's weights (not transformers' forward), because a
flat cache of plain tensors with dynamic lengths exports cleanly and lets the decoding loop drop and
reorder batch rows with one indexing operation. ``verify`` checks it against transformers on real audio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from whisper_triton.onnx_runtime import CROSS_KV_FILE, DECODER_FILE, ENCODER_FILE

logger = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization became a standard op in opset 17


class EncoderGraph(nn.Module):
    """Encoder over ``[batch, windows, n_mels, 3000]``: Triton batches requests, each with its windows."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.model.encoder

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        batch, windows = input_features.shape[0], input_features.shape[1]
        states = self.encoder(input_features.flatten(0, 1)).last_hidden_state
        return states.reshape(batch, windows, states.shape[1], states.shape[2])


class CrossKVGraph(nn.Module):
    """Project encoder states into each decoder layer's cross-attention keys and values, split into heads.

    Keys come out transposed (``[layers, B, heads, head_dim, 1500]``) and values as
    ``[layers, B, heads, 1500, head_dim]``: the layouts the decoder's two matmuls read directly, so no
    decoder step copies or transposes the 1500-position tensors again.
    """

    def __init__(self, model):
        super().__init__()
        self.layers = model.model.decoder.layers
        self.num_heads = model.config.decoder_attention_heads

    def forward(self, encoder_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, positions, width = encoder_output.shape
        shape = (batch, positions, self.num_heads, width // self.num_heads)
        keys = [
            layer.encoder_attn.k_proj(encoder_output).reshape(shape).permute(0, 2, 3, 1)
            for layer in self.layers
        ]
        values = [
            layer.encoder_attn.v_proj(encoder_output).reshape(shape).transpose(1, 2) for layer in self.layers
        ]
        return torch.stack(keys), torch.stack(values)


class DecoderStepGraph(nn.Module):
    """One decoder call over new tokens, attending to the cached keys/values of earlier ones.

    The self-attention cache is ``[layers, B, heads, past, head_dim]`` for keys and values alike; the
    cross-attention keys/values have one entry per window, ``B`` being a multiple of the windows.
    """

    def __init__(self, model):
        super().__init__()
        decoder = model.model.decoder
        self.embed_tokens = decoder.embed_tokens
        self.embed_positions = decoder.embed_positions
        self.layers = decoder.layers
        self.layer_norm = decoder.layer_norm
        self.num_heads = model.config.decoder_attention_heads
        self.head_dim = model.config.d_model // self.num_heads
        self.scale = self.head_dim**-0.5

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, heads, T, head_dim]
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:  # [B, heads, T, head_dim] -> [B, T, d]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.num_heads * self.head_dim)

    def _cross_attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Attention of ``q`` ``[R, heads, T, head_dim]`` to per-window keys ``[W, heads, head_dim, F]`` and
        values ``[W, heads, F, head_dim]``: the R = W * k rows come k per window, in window order, and
        share their window's one copy (beam search needs no copy per beam)."""
        rows, heads, steps, width = q.shape
        windows = keys.shape[0]
        per_window = rows // windows
        q = q.reshape(windows, per_window, heads, steps, width).transpose(1, 2)
        q = q.reshape(windows, heads, per_window * steps, width)
        out = torch.matmul(torch.softmax(torch.matmul(q, keys), dim=-1), values)
        out = out.reshape(windows, heads, per_window, steps, width).transpose(1, 2)
        return out.reshape(rows, heads, steps, width)

    def forward(self, tokens, self_k, self_v, cross_k, cross_v):
        past = self_k.shape[3]
        steps = tokens.shape[1]
        positions = torch.arange(steps, device=tokens.device) + past
        x = self.embed_tokens(tokens) + self.embed_positions.weight[positions]
        # Causal mask over [past + new] keys: new token i sees keys 0 .. past + i.
        key_index = torch.arange(past + steps, device=tokens.device)
        mask = torch.where(key_index[None, :] > positions[:, None], float("-inf"), 0.0).to(x.dtype)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            h = layer.self_attn_layer_norm(x)
            q = self._heads(layer.self_attn.q_proj(h)) * self.scale
            k = torch.cat([self_k[i], self._heads(layer.self_attn.k_proj(h))], dim=2)
            v = torch.cat([self_v[i], self._heads(layer.self_attn.v_proj(h))], dim=2)
            new_k.append(k)
            new_v.append(v)
            weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) + mask, dim=-1)
            x = x + layer.self_attn.out_proj(self._merge(torch.matmul(weights, v)))
            h = layer.encoder_attn_layer_norm(x)
            q = self._heads(layer.encoder_attn.q_proj(h)) * self.scale
            x = x + layer.encoder_attn.out_proj(self._merge(self._cross_attend(q, cross_k[i], cross_v[i])))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        logits = torch.matmul(self.layer_norm(x), self.embed_tokens.weight.T)
        return logits, torch.stack(new_k), torch.stack(new_v)


@dataclass(frozen=True)
class ExportedModel:
    directory: Path
    encoder: Path
    cross_kv: Path
    decoder: Path


ENCODER_AXES = {"input_features": {0: "batch", 1: "windows"}, "encoder_output": {0: "batch", 1: "windows"}}


def _device(model) -> torch.device:
    """Where the model's weights are: the example inputs of the export must be there too."""
    return next(model.parameters()).device


def export_encoder(model, path: str | Path, opset: int = OPSET) -> Path:
    """Write the encoder graph alone (float32) for ``model`` to the file ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    config = model.config
    features = torch.zeros(2, 2, config.num_mel_bins, 2 * config.max_source_positions, device=_device(model))
    with torch.inference_mode():
        _export(
            EncoderGraph(model),
            (features,),
            path,
            ["input_features"],
            ["encoder_output"],
            ENCODER_AXES,
            opset,
        )
    return path


def export_onnx_models(model, output_dir: str | Path, opset: int = OPSET) -> ExportedModel:
    """Write encoder, cross-K/V and decoder ONNX graphs (float32) for ``model`` into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = ExportedModel(
        output_dir, output_dir / ENCODER_FILE, output_dir / CROSS_KV_FILE, output_dir / DECODER_FILE
    )
    export_encoder(model, paths.encoder, opset)
    model = model.float().eval()
    config = model.config
    device = _device(model)
    batch, prompt = 2, 3
    layers, d_model, heads = config.decoder_layers, config.d_model, config.decoder_attention_heads
    encoder_states = torch.zeros(batch, config.max_source_positions, d_model, device=device)
    cache = torch.zeros(layers, batch, heads, 0, d_model // heads, device=device)
    # Two rows reading one window (as two beams do): the traced graph keeps rows and windows apart.
    cross_k = torch.zeros(layers, 1, heads, d_model // heads, config.max_source_positions, device=device)
    cross_v = torch.zeros(layers, 1, heads, config.max_source_positions, d_model // heads, device=device)
    tokens = torch.zeros(batch, prompt, dtype=torch.int64, device=device)
    with torch.inference_mode():
        _export(
            CrossKVGraph(model),
            (encoder_states,),
            paths.cross_kv,
            ["encoder_output"],
            ["cross_k", "cross_v"],
            {"encoder_output": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}},
            opset,
        )
        _export(
            DecoderStepGraph(model),
            (tokens, cache, cache, cross_k, cross_v),
            paths.decoder,
            ["tokens", "self_k", "self_v", "cross_k", "cross_v"],
            ["logits", "new_self_k", "new_self_v"],
            {
                "tokens": {0: "batch", 1: "steps"},
                "self_k": {1: "batch", 3: "past"},
                "self_v": {1: "batch", 3: "past"},
                "cross_k": {1: "windows"},
                "cross_v": {1: "windows"},
                "logits": {0: "batch", 1: "steps"},
                "new_self_k": {1: "batch", 3: "total"},
                "new_self_v": {1: "batch", 3: "total"},
            },
            opset,
        )
    return paths


def _export(module, args, path: Path, inputs, outputs, dynamic_axes, opset: int) -> None:
    import warnings

    if opset < OPSET:
        raise ValueError(f"opset must be >= {OPSET} (LayerNormalization), got {opset}")

    with warnings.catch_warnings():
        # The TorchScript exporter is the mature path for these dynamic-shape graphs; silence its
        # deprecation notice and the tracer's notes about shape-dependent Python values.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    logger.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)


def reference_logits(model, features: np.ndarray, tokens: list[int]) -> np.ndarray:
    """transformers' own logits for ``tokens`` after ``features`` (one utterance), for parity checks."""
    with torch.inference_mode():
        out = model(
            input_features=torch.from_numpy(features[None]).to(model.dtype),
            decoder_input_ids=torch.tensor([tokens]),
        )
    return out.logits[0].float().numpy()
