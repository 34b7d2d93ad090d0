"""The baselines the field starts from: a bigram model and Bengio et al.'s (2003) MLP.

**bigram.** The next token depends on the current one only. The backbone looks up a vector
e_a (d_model wide) and appends a constant 1, so the language-model head computes
    logits(a -> b) = W_b . e_a + u_b
a rank-d_model factorisation of the V x V bigram table plus a unigram bias u (the appended
1 is what gives the bias-free head its bias). With d_model >= V it can represent any bigram
table. Because hidden is d_model + 1 wide the head is never tied to the embedding: a tied
bigram would force logits(a -> b) = logits(b -> a). No state: the context is one token.

**mlp** (Bengio, Ducharme, Vincent & Jauvin 2003, "A Neural Probabilistic Language Model").
Position t concatenates the embeddings of tokens t-k+1 .. t (k = `model.extra.context`,
default 3; positions before the start use a learned start vector) and passes them through
n_layers hidden layers of width d_model with `activation` (tanh in the paper):

    x_t = [e(w_{t-k+1}); ...; e(w_t)]        (k * E)
    h_t = act(W_n ... act(W_1 x_t + b_1) ...)  (d_model)

The state is the last k-1 embeddings, so decoding token by token equals a full pass.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..nn.activation import get_activation
from ..nn.conv import last_window
from ..nn.recurrent import lengths_from_mask, select_state
from .backbone import Backbone


def _refuse_bidirectional(config: ModelConfig) -> None:
    if config.bidirectional:
        raise ConfigError(f"model.bidirectional=true is not supported by arch={config.arch} "
                          f"(a fixed left-context baseline)")


class Bigram(Backbone):
    """ids (B, T) -> [e(ids); 1] (B, T, d_model + 1): a factorised bigram table plus bias."""

    causal = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        _refuse_bidirectional(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.out_dim = config.d_model + 1
        nn.init.normal_(self.embed.weight, std=0.02)

    def init_weights(self, module: nn.Module) -> None:
        """Init for the output layer that a head adds (called by `heads.CausalLM`)."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                state: None = None) -> tuple[torch.Tensor, None]:
        e = self.embed(ids)  # (B, T, D)
        ones = e.new_ones(*e.shape[:2], 1)  # (B, T, 1)
        return torch.cat([e, ones], dim=-1), None  # (B, T, D + 1)


class BengioMLP(Backbone):
    """Fixed-window MLP language model: ids (B, T) -> hidden (B, T, d_model)."""

    causal = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        _refuse_bidirectional(config)
        c = config
        self.context = int(c.extra.get("context", 3))
        if self.context < 1:
            raise ConfigError(f"model.extra.context must be a positive integer, got "
                              f"{c.extra.get('context')!r}")
        E = c.embed_width
        self.out_dim = c.d_model
        self.embed = nn.Embedding(c.vocab_size, E)
        self.start = nn.Parameter(torch.zeros(E))  # stands in for tokens before the start
        layers: list[nn.Module] = []
        width = self.context * E
        for _ in range(c.n_layers):
            layers += [nn.Linear(width, c.d_model, bias=c.bias),
                       get_activation(c.activation or "tanh"), nn.Dropout(c.dropout)]
            width = c.d_model
        self.mlp = nn.Sequential(*layers)
        nn.init.normal_(self.embed.weight, std=0.1)
        nn.init.normal_(self.start, std=0.1)

    def init_weights(self, module: nn.Module) -> None:
        """Init for an untied output layer that a head adds (called by `heads.CausalLM`)."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = ids.shape
        k = self.context
        e = self.embed(ids)  # (B, T, E)
        if state is None:
            state = self.start.expand(B, k - 1, -1)  # (B, k-1, E)
        padded = torch.cat([state.to(e.dtype), e], dim=1)  # (B, k-1+T, E)
        windows = padded.unfold(1, k, 1)  # (B, T, E, k): window t covers tokens t-k+1 .. t
        x = windows.transpose(2, 3).reshape(B, T, k * e.size(-1))  # (B, T, k*E), oldest first
        lengths = None
        if mask is not None and not bool(mask.all()):
            lengths = lengths_from_mask(mask)  # (B,)
        return self.mlp(x), last_window(padded, k - 1, lengths)

    @staticmethod
    def select_state(state: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Reorder / subset the batch rows of a state (beam search)."""
        return select_state(state, rows, dim=0)


def build_bigram(config: ModelConfig) -> Bigram:
    """Bigram baseline: a rank-d_model bigram table plus a unigram bias (untied head)."""
    return Bigram(config)


def build_mlp(config: ModelConfig) -> BengioMLP:
    """Bengio (2003) fixed-context MLP language model."""
    return BengioMLP(config)
