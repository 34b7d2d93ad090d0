"""Heads turn a backbone's hidden states into task outputs and return `(logits, loss)`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

IGNORE_INDEX = -100  # target value that contributes no loss (padding)


class CausalLM(nn.Module):
    """Next-token prediction: hidden (B, T, D) -> logits (B, T, V), cross-entropy loss.

    The output projection shares the token embedding's weight when the widths agree
    (weight tying, Press & Wolf 2017): fewer parameters and a better model at small scale.
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, config
        self.lm_head = nn.Linear(backbone.out_dim, config.vocab_size, bias=False)
        if config.tie_embeddings and backbone.embed.weight.shape == self.lm_head.weight.shape:
            self.lm_head.weight = backbone.embed.weight
        elif hasattr(backbone, "_init_weights"):
            backbone._init_weights(self.lm_head)

    @property
    def causal(self) -> bool:
        return self.backbone.causal

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, *,
                mask: torch.Tensor | None = None, state=None, return_state: bool = False,
                last_only: bool = False):
        """ids (B, T) -> (logits, loss) or (logits, loss, state) with `return_state`.

        `last_only` projects only the final position (all that decoding needs).
        """
        hidden, state = self.backbone(ids, mask=mask, state=state)  # (B, T, D)
        if last_only:
            hidden = hidden[:, -1:]
        logits = self.lm_head(hidden)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                   ignore_index=IGNORE_INDEX)
        return (logits, loss, state) if return_state else (logits, loss)
