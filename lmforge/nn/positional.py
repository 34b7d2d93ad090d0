"""Positional information: learned absolute embeddings and rotary embeddings (RoPE)."""

from __future__ import annotations

import torch
from torch import nn


class LearnedPositions(nn.Module):
    """A learned vector per position, added to the token embeddings (GPT-2, BERT)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Embedding(max_len, d_model)

    def forward(self, start: int, length: int, device: torch.device,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of positions start .. start+length-1 (T, D), or of explicit `positions`
        (B, T) -> (B, T, D): a left-padded row's real tokens then get their true positions."""
        if positions is not None:
            return self.weight(positions.clamp(0, self.max_len - 1))  # (B, T, D)
        if start + length > self.max_len:
            raise ValueError(
                f"sequence of {start + length} tokens is longer than model.max_len={self.max_len}"
            )
        pos = torch.arange(start, start + length, device=device)
        return self.weight(pos)  # (T, D)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al., 2021): rotate query/key channel pairs by a
    position-dependent angle so that q.k depends on relative position only."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        assert head_dim % 2 == 0, "rotary needs an even head dimension"
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        t = torch.arange(max_len).float()
        freqs = torch.outer(t, inv_freq)  # (T, hd/2)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x: (B, H, T, hd) -> same shape, rotated for positions start .. start+T-1."""
        T = x.size(-2)
        if start + T > self.max_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than model.max_len={self.max_len}")
        cos = self.cos[start:start + T].to(x.dtype)  # (T, hd/2)
        sin = self.sin[start:start + T].to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2)
