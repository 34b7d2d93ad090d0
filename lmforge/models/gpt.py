"""GPT-style decoder: token + position embeddings, pre-LayerNorm Transformer blocks.

Reading order: Block, then the GPT backbone, then its builder. The language-model head (tied
output projection, cross-entropy) lives in `heads.CausalLM`.
"""

from __future__ import annotations


import torch
from torch import nn

from ..config import ModelConfig
from ..nn.attention import KVCache, SelfAttention
from ..nn.mlp import MLP
from ..nn.positional import LearnedPositions, Rotary
from .backbone import Backbone, layer_kv_caches, scaled_residual_init


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)) (pre-LN, GPT-2)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, activation: str, dropout: float,
                 bias: bool, causal: bool, rotary: Rotary | None, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, eps=norm_eps, bias=bias)
        self.attn = SelfAttention(d_model, n_heads, dropout, bias, causal, rotary)
        self.ln2 = nn.LayerNorm(d_model, eps=norm_eps, bias=bias)
        self.mlp = MLP(d_model, d_ff, activation, dropout, bias)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_mask, cache)
        return x + self.mlp(self.ln2(x))


class GPT(Backbone):
    """Decoder-only Transformer backbone: ids (B, T) -> hidden (B, T, D).

    `state` is a list of per-layer `KVCache`s from `init_state`; with it, each call appends
    its tokens to the cache and attends over everything cached. Without it nothing is cached.
    """

    causal = True
    kv_cache = True  # init_state pre-allocates KV caches of max_len positions

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.out_dim = c.d_model
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = LearnedPositions(c.max_len, c.d_model) if c.positional == "learned" else None
        head_dim = c.d_model // c.n_heads
        rotary = Rotary(head_dim, c.max_len) if c.positional == "rotary" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.ff_width, c.activation, c.dropout, c.bias, True, rotary,
                  c.norm_eps)
            for _ in range(c.n_layers)
        )
        self.ln_f = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.apply(self.init_weights)

    def init_weights(self, module: nn.Module) -> None:
        scaled_residual_init(module, self.config.n_layers)  # GPT-2's init (models/backbone.py)

    def init_state(self, batch_size: int, max_len: int | None = None,
                   device: torch.device | None = None, dtype: torch.dtype | None = None) -> list[KVCache]:
        """Empty KV caches, one per layer, with room for `max_len` (default model.max_len)."""
        return layer_kv_caches(self, batch_size, max_len, device, dtype)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                state: list[KVCache] | None = None, positions: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[KVCache] | None]:
        """`positions` (B, T), optional: each token's position when rows are left-padded
        (learned positions; rotary attention depends on relative positions only)."""
        B, T = ids.shape
        start = state[0].length if state else 0
        x = self.embed(ids)  # (B, T, D)
        if self.pos is not None:
            x = x + self.pos(start, T, ids.device, positions)
        x = self.drop(x)
        # with a cache the key mask must cover the cached positions as well: the caller passes
        # the mask of everything so far (B, start+T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, state[i] if state else None)
        return self.ln_f(x), state


def build_gpt(config: ModelConfig) -> GPT:
    return GPT(config)
