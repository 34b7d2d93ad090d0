"""Normalisation layers that torch.nn does not give in the form lmforge needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as a function (the module below; compiled decoding calls it directly)."""
    normed = F.rms_norm(x.float(), (x.size(-1),), eps=eps)  # (..., D) in fp32
    return weight * normed.to(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019): x / rms(x) * weight, no mean, no bias.

    Computed in float32 and cast back before the weight, as Llama's reference code does, so a
    bf16 model normalises exactly like its fp32 twin up to the final rounding.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps:g}"
