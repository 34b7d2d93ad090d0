"""Convolutional backbones: a causal dilated residual CNN (WaveNet / ByteNet style) for
language modelling, its same-padded twin for classifiers and encoders, and Kim (2014)
multi-width filters.

    causal:      embed (V, E) -> [Linear E->D] -> n_layers x ConvBlock(dilation d_l) -> LN
    non-causal:  the same blocks with same-padded convs (each position sees both sides)
    Kim 2014:    embed -> parallel convs of widths `filter_widths` -> act -> concat
                 (hidden width len(filter_widths) * D; the classifier head max-pools it)

Dilations default to 1, 2, 4, ... (one per layer), so the receptive field grows
exponentially with depth: 1 + sum((kernel_size - 1) * d). It is exposed as
`backbone.receptive_field` and logged at build. The causal net's state is, per layer, the
last (kernel_size - 1) * d inputs of its conv, so decoding one token at a time costs one
column per layer and equals a full forward pass.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..nn.conv import ConvBlock, MultiWidthConv, receptive_field
from ..nn.recurrent import lengths_from_mask, select_state
from .backbone import Backbone

log = logging.getLogger(__name__)


def is_causal(config: ModelConfig) -> bool:
    """Causal under a language-model head; `model.extra.causal` overrides (e.g. decoders)."""
    return bool(config.extra.get("causal", config.head == "causal_lm"))


def conv_dilations(config: ModelConfig) -> list[int]:
    """`model.dilations`, or 1, 2, 4, ... per layer; checked against n_layers."""
    dilations = list(config.dilations) or [2 ** i for i in range(config.n_layers)]
    if len(dilations) != config.n_layers or min(dilations) < 1:
        raise ConfigError(f"model.dilations={config.dilations} must hold n_layers="
                          f"{config.n_layers} positive integers (or be empty for 1, 2, 4, ...)")
    return dilations


class CNN(Backbone):
    """Convolutional backbone: ids (B, T) -> hidden (B, T, out_dim)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.causal = is_causal(c)
        if c.bidirectional and self.causal:
            raise ConfigError("model.bidirectional=true cannot be used with a causal cnn "
                              "(model.head=causal_lm); a non-causal cnn already sees both sides")
        if c.kernel_size < 1:
            raise ConfigError(f"model.kernel_size must be positive, got {c.kernel_size}")
        activation = c.activation or "gelu"
        self.embed = nn.Embedding(c.vocab_size, c.embed_width)
        self.drop = nn.Dropout(c.dropout)
        self.kim = None
        if c.filter_widths:
            if self.causal or min(c.filter_widths) < 1:
                raise ConfigError(f"model.filter_widths={c.filter_widths} (Kim 2014) needs a "
                                  f"non-causal head such as classifier, and positive widths")
            self.kim = MultiWidthConv(c.embed_width, c.d_model, c.filter_widths, activation, c.bias)
            self.out_dim = len(c.filter_widths) * c.d_model
            self.dilations: list[int] = []
            self.receptive_field = max(c.filter_widths)
        else:
            self.dilations = conv_dilations(c)
            self.proj_in = (nn.Linear(c.embed_width, c.d_model, bias=c.bias)
                            if c.embed_width != c.d_model else nn.Identity())
            self.blocks = nn.ModuleList(
                ConvBlock(c.d_model, c.kernel_size, d, c.ff_width, activation, c.gated,
                          c.dropout, self.causal, c.bias)
                for d in self.dilations
            )
            self.ln_f = nn.LayerNorm(c.d_model, bias=c.bias)
            self.out_dim = c.d_model
            # a same-padded stack sees as far to the right as a causal one sees to the left
            rf = receptive_field(c.kernel_size, self.dilations)
            self.receptive_field = rf if self.causal else 2 * rf - 1
        self.apply(self.init_weights)
        log.info("cnn: %s, kernel %d, dilations %s, receptive field %d tokens",
                 "causal" if self.causal else "non-causal", c.kernel_size, self.dilations,
                 self.receptive_field)

    def init_weights(self, module: nn.Module) -> None:
        # GPT-2 style: N(0, 0.02), residual branch outputs scaled by 1/sqrt(2 * n_layers)
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            std = 0.02
            if getattr(module, "is_residual_proj", False):
                std /= math.sqrt(2 * self.config.n_layers)
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                state: list[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        if mask is not None and bool(mask.all()):
            mask = None
        x = self.drop(self.embed(ids))  # (B, T, E)
        if self.kim is not None:
            return self.drop(self.kim(x, mask)), None  # (B, T, len(widths) * D)
        x = self.proj_in(x)  # (B, T, D)
        # causal: padding sits after every real token, so it only matters for the state
        lengths = lengths_from_mask(mask) if mask is not None and self.causal else None  # (B,)
        new_state = [] if self.causal else None
        for i, block in enumerate(self.blocks):
            x, window = block(x, state[i] if state is not None else None, mask, lengths)
            if self.causal:
                new_state.append(window)  # (B, (k-1)*d_i, D)
        return self.ln_f(x), new_state

    @staticmethod
    def select_state(state: list[torch.Tensor] | None, rows: torch.Tensor):
        """Reorder / subset the batch rows of a state (beam search)."""
        return select_state(state, rows, dim=0)


def build_cnn(config: ModelConfig) -> CNN:
    """Causal dilated residual CNN for LMs; same-padded (or Kim multi-width) otherwise."""
    return CNN(config)
