"""The backbone contract, with a default for every optional hook.

A backbone maps token ids to hidden states:

    hidden, state = backbone(ids, mask=None, state=None)
        ids    (B, T) int64
        mask   (B, T) bool, True at real tokens (None = no padding)
        hidden (B, T, backbone.out_dim)
        state  whatever lets the next call continue the sequence: the KV cache of a
               Transformer decoder, (h, c) of an LSTM, the conv window of a CNN;
               None in, fresh state out.

Every backbone subclasses `Backbone` and sets `out_dim` and `embed` in `__init__`; the rest
has defaults that a family overrides only where it differs. Heads (`models/heads.py`),
decoding (`generate/`) and fine-tuning read these attributes directly — no `getattr` probes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..nn.attention import KVCache
from ..nn.state import reorder_state


class Backbone(nn.Module):
    """Base class of every backbone family (see the module docstring for the contract)."""

    causal: bool = True  # position t sees only positions <= t (may generate left to right)
    bidirectional: bool = False  # reads both ways (recurrent nets): the classifier pools both
    kv_cache: bool = False  # `init_state` pre-allocates a cache bounded by config.max_len
    # set in __init__ (annotations only: a class attribute would shadow nn.Module's registry)
    out_dim: int  # width of `hidden`
    embed: nn.Embedding  # the token embedding (tied heads, GloVe vectors)
    # blocks: nn.ModuleList — the repeated layers, where a family has them (GPT, BERT, Llama):
    # activation checkpointing and LoRA-by-name walk them

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                state: Any = None) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def init_state(self, batch_size: int, max_len: int | None = None,
                   device: torch.device | None = None, dtype: torch.dtype | None = None) -> Any:
        """A fresh decoding state for `batch_size` rows; None when the family builds its
        state on the first call (recurrent nets, CNN windows)."""
        return None

    @staticmethod
    def select_state(state: Any, rows: torch.Tensor) -> Any:
        """Keep (and repeat) batch rows of a state (beam search); batch-first by default."""
        return reorder_state(state, rows)

    def init_weights(self, module: nn.Module) -> None:
        """Init of a layer a head adds on top (an untied output layer): N(0, 0.02), zero bias."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def scaled_residual_init(module: nn.Module, n_layers: int) -> None:
    """GPT-2 init: N(0, 0.02); residual output projections (marked `is_residual_proj`) scaled
    by 1/sqrt(2 * n_layers) so the residual stream's variance does not grow with depth."""
    if isinstance(module, nn.Linear):
        std = 0.02
        if getattr(module, "is_residual_proj", False):
            std = 0.02 / math.sqrt(2 * n_layers)
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def layer_kv_caches(backbone: nn.Module, batch_size: int, max_len: int | None = None,
                    device: torch.device | None = None, dtype: torch.dtype | None = None) -> list:
    """Empty KV caches of a decoder, one per block, holding only its key-value heads
    (model.n_kv_heads; all heads without grouping), with room for `max_len` (default
    model.max_len) positions."""
    p, c = backbone.embed.weight, backbone.config
    return [KVCache(batch_size, c.kv_heads, max_len or c.max_len, c.attn_head_dim,
                    device or p.device, dtype or p.dtype) for _ in backbone.blocks]
