"""The extractive summarizer's model: a backbone reads each sentence, a document GRU scores them.

Built by `build_model` for `model.head=extractive`; the task, recipe and inference live in
`lmforge/tasks/extractive*.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .build import build_backbone


class SentenceScorer(nn.Module):
    """Backbone over each sentence -> pooled vector + position -> document BiGRU -> score."""

    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, config
        D = backbone.out_dim
        self.max_sentences = int(config.extra.get("max_sentences", 32))
        self.position = nn.Embedding(self.max_sentences, D)
        nn.init.normal_(self.position.weight, std=0.02)
        self.doc = nn.GRU(D, D // 2, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(config.dropout)
        self.score = nn.Linear(2 * (D // 2), 1)

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden (M, T, D), mask (M, T) -> (M, D) by config.pooling."""
        pooling = self.config.pooling
        m = mask[..., None].to(hidden.dtype)
        if pooling == "max":
            return hidden.masked_fill(~mask[..., None], float("-inf")).amax(1)
        if pooling == "cls":
            return hidden[:, 0]
        if pooling == "last":
            last = mask.long().sum(1).clamp(min=1) - 1  # (M,)
            return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # mean

    def forward(self, ids: torch.Tensor, tok_mask: torch.Tensor, sent_mask: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids (B, N, T), tok_mask (B, N, T), sent_mask (B, N) -> scores (B, N), loss.

        `targets` (B, N) is a distribution over each document's sentences (the oracle).
        """
        B, N, T = ids.shape
        real = sent_mask.reshape(-1)  # only real sentences go through the backbone
        hidden, _ = self.backbone(ids.reshape(B * N, T)[real], mask=tok_mask.reshape(B * N, T)[real])
        pooled = self._pool(hidden, tok_mask.reshape(B * N, T)[real])  # (M, D)
        vectors = pooled.new_zeros(B * N, pooled.size(-1))
        vectors[real] = pooled
        x = vectors.view(B, N, -1) + self.position(torch.arange(N, device=ids.device))  # (B, N, D)
        context, _ = self.doc(self.drop(x))  # (B, N, D)
        scores = self.score(self.drop(context)).squeeze(-1).float()  # (B, N)
        scores = scores.masked_fill(~sent_mask, float("-inf"))
        loss = None
        if targets is not None:
            logp = F.log_softmax(scores, dim=-1).masked_fill(~sent_mask, 0.0)
            loss = -(targets * logp).sum(-1).mean()
        return scores, loss


def build_extractive(config: ModelConfig) -> SentenceScorer:
    """SentenceScorer over the backbone named by `config.arch`."""
    return SentenceScorer(build_backbone(config), config)
