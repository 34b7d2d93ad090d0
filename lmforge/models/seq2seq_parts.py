"""Parts both encoder-decoder families share: options, loss, encoder memory, the copy mechanism."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

IGNORE_INDEX = -100
ATTENTIONS = ("bahdanau", "luong_dot", "luong_general")
RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def extra(config: ModelConfig, name: str, default: Any) -> Any:
    """`config.extra[name]`, or `default` when absent."""
    return config.extra.get(name, default)


def seq2seq_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean token cross-entropy over non-padding targets; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)


@dataclass
class Memory:
    """What the decoder reads from one encoded batch (computed once per input)."""

    states: torch.Tensor  # (B, S, Dm) encoder outputs
    mask: torch.Tensor  # (B, S) bool, True at real source tokens
    src: torch.Tensor  # (B, S) source ids (the copy mechanism scatters onto them)
    keys: Any = None  # precomputed per input: cross-attention K/V per layer, or attention keys
    final: Any = None  # recurrent encoder's final state (decoder initialisation)

    def select(self, rows: torch.Tensor) -> "Memory":
        """Memory of the given batch rows, in that order (beam search repeats rows)."""
        return Memory(self.states.index_select(0, rows), self.mask.index_select(0, rows),
                      self.src.index_select(0, rows), _select(self.keys, rows, 0),
                      _select(self.final, rows, 1))


def _select(value: Any, rows: torch.Tensor, dim: int) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.index_select(dim, rows)
    return type(value)(_select(v, rows, dim) for v in value)


# --------------------------------------------------------------------------- copy mechanism


class PointerGenerator(nn.Module):
    """Mix generating from the vocabulary with copying a source token (See et al., 2017, eq. 8-9).

    p_gen = sigmoid(w . [context; decoder output; input embedding] + b)
    P(w)  = p_gen * softmax(logits)(w) + (1 - p_gen) * sum of attention on source positions holding w
    Source and target share one vocabulary, so copying is a scatter-add onto the source ids.
    """

    def __init__(self, d_context: int, d_out: int, d_embed: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_context + d_out + d_embed, 1)

    def forward(self, logits: torch.Tensor, attn: torch.Tensor, context: torch.Tensor,
                out: torch.Tensor, emb: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """logits (B, T, V), attn (B, T, S) -> log-probabilities (B, T, V)."""
        p_gen = torch.sigmoid(self.gate(torch.cat([context, out, emb], -1))).float()  # (B, T, 1)
        probs = F.softmax(logits.float(), dim=-1) * p_gen  # (B, T, V)
        copy = attn.float() * (1.0 - p_gen)  # (B, T, S)
        index = src[:, None, :].expand(-1, logits.size(1), -1)  # (B, T, S)
        probs = probs.scatter_add(-1, index, copy)
        return probs.clamp_min(1e-12).log()


class CopyAttention(nn.Module):
    """One bilinear attention head from decoder outputs to encoder states, for copying."""

    def __init__(self, d_model: int, d_memory: int) -> None:
        super().__init__()
        self.q = nn.Linear(d_model, d_memory, bias=False)

    def forward(self, out: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """out (B, T, D) -> attention (B, T, S), context (B, T, Dm)."""
        scores = self.q(out) @ memory.states.transpose(1, 2) / math.sqrt(memory.states.size(-1))
        scores = scores.masked_fill(~memory.mask[:, None, :], float("-inf"))  # (B, T, S)
        attn = F.softmax(scores.float(), dim=-1).to(out.dtype)
        return attn, attn @ memory.states


class EncoderDecoder(nn.Module):
    """What both families share: training-time forward over `encode` and `decode`."""

    label_smoothing: float = 0.0

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> Memory:
        raise NotImplementedError

    def decode(self, tgt_in: torch.Tensor, memory: Memory) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, targets: torch.Tensor | None = None,
                *, src_mask: torch.Tensor | None = None,
                label_smoothing: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(src, tgt_in[, targets]) -> (logits (B, T, V), loss or None)."""
        logits = self.decode(tgt_in, self.encode(src, src_mask))
        eps = self.label_smoothing if label_smoothing is None else label_smoothing
        return logits, (seq2seq_loss(logits, targets, eps) if targets is not None else None)


def _embeddings(c: ModelConfig, width: int) -> tuple[nn.Embedding, nn.Embedding]:
    """Source and target embeddings: one table when the vocabulary is joint and shared."""
    src_vocab = extra(c, "src_vocab_size", 0)  # 0: the joint vocabulary
    tgt = nn.Embedding(c.vocab_size, width)
    if extra(c, "share_embeddings", True) and not src_vocab:
        return tgt, tgt
    return nn.Embedding(src_vocab or c.vocab_size, width), tgt


