"""Recurrent convolutional network (Lai, Xu, Liu & Zhao, AAAI 2015).

Each word is represented with its context: a left context c_l(w_i) summarising w_1..w_{i-1}
(a forward recurrent net), a right context c_r(w_i) summarising w_{i+1}..w_n (a backward
one), and its own embedding e(w_i):

    x_i = [c_l(w_i); e(w_i); c_r(w_i)]
    y_i = act(W x_i + b)        position-wise projection to d_model (tanh in the paper)

The classifier head then max-pools y over time (the paper's "max-pooling layer"). The causal
variant for language modelling drops the right context: y_i = act(W [c_l(w_i); e(w_i)] + b).

The paper's recurrence is a simple Elman one; here `model.cell` picks rnn, lstm (default) or
gru, all on torch's fused kernels. Left and right context nets are separate unidirectional
nets, so the left context never sees a right-hand word even when n_layers > 1. The causal
state is the forward net's state; its top layer's h is the left context of the next token.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..nn.activation import get_activation
from ..nn.recurrent import FUSED, State, lengths_from_mask, run_fused, select_state
from .backbone import Backbone
from .cnn import is_causal


def reverse_rows(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each row's first `lengths[b]` steps of x (B, T, C); padding stays in place.

    >>> reverse_rows(torch.tensor([[1, 2, 3, 0]])[..., None], torch.tensor([3]))[..., 0]
    tensor([[3, 2, 1, 0]])
    """
    B, T, C = x.shape
    if lengths is None:
        return x.flip(1)
    t = torch.arange(T, device=x.device)[None]  # (1, T)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return x.gather(1, idx[:, :, None].expand(B, T, C))


def _top_h(state: State) -> torch.Tensor:
    """The top layer's hidden vector (B, H) of a torch-layout state."""
    h = state[0] if isinstance(state, tuple) else state
    return h[-1]


class RCNN(Backbone):
    """Lai et al. (2015): ids (B, T) -> y (B, T, d_model); causal uses left context only."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.causal = is_causal(c)
        if c.bidirectional and self.causal:
            raise ConfigError("model.bidirectional=true cannot be used with a causal rcnn "
                              "(model.head=causal_lm); the non-causal rcnn already reads both ways")
        if c.cell not in FUSED:
            raise ConfigError(f"model.cell={c.cell!r} is not one of {', '.join(FUSED)}")
        E, H = c.embed_width, c.d_model
        self.out_dim = H
        self.embed = nn.Embedding(c.vocab_size, E)
        self.drop = nn.Dropout(c.dropout)
        inter = c.dropout if c.n_layers > 1 else 0.0

        def context_net() -> nn.RNNBase:
            return FUSED[c.cell](E, H, c.n_layers, bias=c.bias, batch_first=True, dropout=inter)

        self.left = context_net()
        self.right = None if self.causal else context_net()
        n_ctx = 1 if self.causal else 2
        self.proj = nn.Linear(n_ctx * H + E, H, bias=c.bias)
        self.act = get_activation(c.activation or "tanh")
        nn.init.normal_(self.embed.weight, std=0.1)  # see models/rnn.py

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                state: State = None) -> tuple[torch.Tensor, State]:
        B, T = ids.shape
        if mask is not None and bool(mask.all()):
            mask = None
        lengths = lengths_from_mask(mask) if mask is not None else None  # (B,)
        e = self.drop(self.embed(ids))  # (B, T, E)
        fwd, new_state = run_fused(self.left, e, mask, state)  # (B, T, H)
        # c_l(w_i) = forward output at i-1; at i = 0 the incoming state's top h (or zeros)
        first = _top_h(state)[:, None] if state is not None else fwd.new_zeros(B, 1, fwd.size(2))
        c_left = torch.cat([first.to(fwd.dtype), fwd[:, :-1]], dim=1)  # (B, T, H)
        parts = [c_left, e]
        if self.right is not None:
            bwd, _ = run_fused(self.right, reverse_rows(e, lengths), mask)  # reversed time
            bwd = reverse_rows(bwd, lengths)  # (B, T, H); bwd[i] summarises w_i..w_n
            # c_r(w_i) = bwd at i+1; padded positions are zero, so the last real word gets 0
            c_right = torch.cat([bwd[:, 1:], bwd.new_zeros(B, 1, bwd.size(2))], dim=1)
            parts.append(c_right)
        y = self.act(self.proj(torch.cat(parts, dim=-1)))  # (B, T, H)
        return self.drop(y), (new_state if self.causal else None)

    @staticmethod
    def select_state(state: State, rows: torch.Tensor) -> State:
        """Reorder / subset the batch rows of a state (beam search)."""
        return select_state(state, rows, dim=1)


def build_rcnn(config: ModelConfig) -> RCNN:
    """Recurrent convolutional network; left context only when causal."""
    return RCNN(config)
