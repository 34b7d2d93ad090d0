"""Llama-family decoder: RMSNorm, SwiGLU, rotary positions, grouped-query attention.

One class covers Llama 1-3, Mistral, Qwen2, Qwen3 and SmolLM; they differ by config fields,
not by code (litgpt's approach):

    n_kv_heads            key-value heads (GQA); 0 = n_heads
    head_dim              per-head width when it is not d_model / n_heads (Qwen3)
    rope_theta            rotary base (10,000 Llama 2, 500,000 Llama 3, 1,000,000 Qwen)
    rope_scaling          {"type": "linear", ...} or {"type": "llama3", ...} (Llama 3.1)
    qkv_bias              biases on q, k, v only (Qwen2)
    qk_norm               RMSNorm on every query / key head (Qwen3)
    sliding_window        Mistral's local attention, from layer sliding_window_start on
    tie_embeddings        the output projection shares the token embedding (SmolLM, Qwen small)

Reading order: Block, the Llama backbone, its builder. The LM head (`heads.CausalLM`) and
the checkpoint converters (`convert/hf_llama.py`) are elsewhere. Layer names follow the
Llama paper's roles so LoRA targets read naturally: `attn.q/k/v/o`, `mlp.gate/up/down`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from ..nn.attention import GroupedQueryAttention, KVCache
from ..nn.mlp import SwiGLU
from ..nn.norm import RMSNorm
from ..nn.positional import Rotary
from .backbone import Backbone, layer_kv_caches, scaled_residual_init
from .llama_step import block_step, can_fuse


def llama_ff_width(d_model: int, multiple_of: int = 8) -> int:
    """Default SwiGLU width: 8/3 d (three matrices cost what a 4d two-matrix MLP costs),
    rounded up to a multiple of `multiple_of`.

    >>> llama_ff_width(128)
    344
    """
    return multiple_of * math.ceil(8 * d_model / 3 / multiple_of)


def ff_width(config: ModelConfig) -> int:
    """The SwiGLU width of a llama config: model.d_ff, or the 8/3 d default."""
    return config.d_ff or llama_ff_width(config.d_model)


def rope_scaling_dict(config: ModelConfig) -> dict | None:
    return dict(config.rope_scaling) if config.rope_scaling else None


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)) (pre-norm, RMSNorm)."""

    def __init__(self, c: ModelConfig, rotary: Rotary, window: int) -> None:
        super().__init__()
        d_ff = ff_width(c)
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = GroupedQueryAttention(c.d_model, c.n_heads, c.kv_heads, c.attn_head_dim, rotary,
                                          c.dropout, c.qkv_bias, c.qk_norm, c.norm_eps, window)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps)
        self.mlp = SwiGLU(c.d_model, d_ff, c.activation, c.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), key_mask, cache)
        return x + self.mlp(self.mlp_norm(x))


class Llama(Backbone):
    """Decoder-only Transformer backbone: ids (B, T) -> hidden (B, T, D).

    `state` is a list of per-layer `KVCache`s from `init_state`, each holding only the
    n_kv_heads key-value heads. Rotary attention depends on relative positions only, so a
    left-padded row (masked) computes what it would alone without explicit positions.
    """

    kv_cache = True  # init_state pre-allocates KV caches of the key-value heads

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.out_dim = c.d_model
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        # one rotary table shared by every layer (a buffer, not a parameter)
        rotary = Rotary(c.attn_head_dim, c.max_len, c.rope_theta, rope_scaling_dict(c), half=True)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(c, rotary, c.sliding_window if i >= c.sliding_window_start else 0)
            for i in range(c.n_layers)
        )
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.apply(self.init_weights)

    def init_weights(self, module: nn.Module) -> None:
        scaled_residual_init(module, self.config.n_layers)  # GPT-2's init (models/backbone.py)

    def init_state(self, batch_size: int, max_len: int | None = None,
                   device: torch.device | None = None, dtype: torch.dtype | None = None) -> list[KVCache]:
        """Empty KV caches (key-value heads only), one per layer."""
        return layer_kv_caches(self, batch_size, max_len, device, dtype)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                state: list[KVCache] | None = None) -> tuple[torch.Tensor, list[KVCache] | None]:
        """With a cache, `mask` covers the cached positions too: (B, start+T)."""
        x = self.drop(self.embed(ids))  # (B, T, D)
        one_row = (ids.shape == (1, 1) and mask is None and bool(state) and not self.training
                   and not torch.is_grad_enabled())  # the compiled block passes no gradient
        for i, block in enumerate(self.blocks):
            y = None
            if one_row and state[i].length and can_fuse(block):  # decoding with --compile
                y = block_step(block, x, state[i])
            x = y if y is not None else block(x, mask, state[i] if state else None)
        return self.norm(x), state


def build_llama(config: ModelConfig) -> Llama:
    return Llama(config)
