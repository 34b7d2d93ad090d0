"""Recurrent backbones: Elman RNN, LSTM and GRU, stacked and optionally bidirectional.

All three run on the fused `torch.nn.RNN/LSTM/GRU` kernels (cuDNN on CUDA, a vectorised C++
loop on CPU); the equations they compute are written out in `lmforge/nn/recurrent.py`. The
one exception: an Elman RNN whose `activation` is not tanh or relu (the only two the fused
kernel has) runs the hand-written `RNNCell` unrolled in Python, which is correct but slower.

    embed (V, E) -> dropout -> n_layers x recurrent (H = d_model, dropout between layers)
                 -> dropout -> hidden (B, T, H) or (B, T, 2H) when bidirectional

`activation` applies to the Elman recurrence only: LSTM and GRU gates are sigmoid/tanh by
definition. The state is torch's: h (L * dirs, B, H), or (h, c) for the LSTM.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..nn.recurrent import (CELLS, FUSED, FUSED_RNN_ACTIVATIONS, State, run_cells, run_fused,
                            select_state)
from .backbone import Backbone

log = logging.getLogger(__name__)


def family_activation(config: ModelConfig, default: str) -> str:
    """`config.activation`, or the family's default when it is empty."""
    return config.activation or default


def check_direction(config: ModelConfig) -> None:
    """Refuse a bidirectional net under a causal language-model head (it would see the future)."""
    if config.bidirectional and config.head == "causal_lm":
        raise ConfigError(
            f"model.bidirectional=true cannot be used with model.head=causal_lm (arch="
            f"{config.arch}): a bidirectional net sees future tokens; use it for classifier or "
            f"encoder heads only"
        )


class RecurrentBackbone(Backbone):
    """Token embedding then a stacked RNN / LSTM / GRU: ids (B, T) -> hidden (B, T, dirs*H)."""

    def __init__(self, config: ModelConfig, kind: str) -> None:
        super().__init__()
        check_direction(config)
        c = config
        self.config, self.kind = c, kind
        self.bidirectional = c.bidirectional
        self.causal = not c.bidirectional
        self.out_dim = c.d_model * (2 if c.bidirectional else 1)
        self.embed = nn.Embedding(c.vocab_size, c.embed_width)
        self.drop = nn.Dropout(c.dropout)
        inter = c.dropout if c.n_layers > 1 else 0.0  # torch warns on dropout with one layer
        self.activation = family_activation(c, "tanh") if kind == "rnn" else ""
        if kind == "rnn" and self.activation not in FUSED_RNN_ACTIVATIONS:
            # no fused kernel for this non-linearity: the hand-written cells, unrolled
            log.warning("rnn: activation=%s has no fused kernel; running the unrolled cells "
                        "(slower). activation=tanh or relu use torch's fused RNN", self.activation)
            dirs = 2 if c.bidirectional else 1
            self.rnn = None
            self.cells = nn.ModuleList(
                CELLS["rnn"](c.embed_width if i < dirs else c.d_model * dirs, c.d_model,
                             c.bias, self.activation)
                for i in range(c.n_layers * dirs)
            )
            self.inter_dropout = inter
        else:
            kwargs = {"nonlinearity": self.activation} if kind == "rnn" else {}
            self.rnn = FUSED[kind](c.embed_width, c.d_model, c.n_layers, bias=c.bias,
                                   batch_first=True, dropout=inter,
                                   bidirectional=c.bidirectional, **kwargs)
        # N(0, 0.1) embeddings: small enough that a tied output layer starts near uniform,
        # large enough to drive the recurrence (torch's N(0, 1) saturates tanh gates)
        nn.init.normal_(self.embed.weight, std=0.1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                state: State = None) -> tuple[torch.Tensor, State]:
        x = self.drop(self.embed(ids))  # (B, T, E)
        if self.rnn is not None:
            out, state = run_fused(self.rnn, x, mask, state)  # (B, T, dirs*H)
        else:
            if mask is not None and bool(mask.all()):
                mask = None
            out, state = run_cells(self.cells, x, state, mask, self.bidirectional,
                                   self.inter_dropout, self.training)
        return self.drop(out), state

    @staticmethod
    def select_state(state: State, rows: torch.Tensor) -> State:
        """Reorder / subset the batch rows of a state (beam search)."""
        return select_state(state, rows, dim=1)


def build_rnn(config: ModelConfig) -> RecurrentBackbone:
    """Elman RNN backbone (tanh by default; relu fused; sigmoid / gelu / silu unrolled)."""
    return RecurrentBackbone(config, "rnn")


def build_lstm(config: ModelConfig) -> RecurrentBackbone:
    """LSTM backbone on the fused kernel."""
    return RecurrentBackbone(config, "lstm")


def build_gru(config: ModelConfig) -> RecurrentBackbone:
    """GRU backbone on the fused kernel."""
    return RecurrentBackbone(config, "gru")
