"""Positional information: learned absolute embeddings and rotary embeddings (RoPE)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

ROPE_SCALINGS = ("linear", "llama3")  # `model.rope_scaling.type` values


def rope_inv_freq(head_dim: int, theta: float = 10000.0,
                  scaling: dict[str, Any] | None = None) -> torch.Tensor:
    """Rotation speed of each channel pair (hd/2,): theta^(-2i/hd), optionally rescaled.

    scaling {"type": "linear", "factor": f}: every frequency / f (positions stretched f times;
    Chen et al. 2023, "position interpolation").
    scaling {"type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_len"}: Llama 3.1's rule - wavelengths longer than original_max_len /
    low_freq_factor are divided by `factor`, shorter than original_max_len / high_freq_factor
    kept, and those in between interpolated smoothly.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = (scaling or {}).get("type")
    if not kind:
        return inv_freq
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    if kind != "llama3":
        raise ValueError(f"rope scaling {kind!r} is not one of {', '.join(ROPE_SCALINGS)}")
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_len"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


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


def rotate_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama's pairing: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) on the two halves of
    the last dimension (`Rotary(half=True)`; compiled decoding calls it directly)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al., 2021): rotate query/key channel pairs by a
    position-dependent angle so that q.k depends on relative position only.

    Pairs are adjacent channels (2i, 2i+1) by default (the paper, lmforge's GPT); `half=True`
    pairs channel i with i + hd/2 as Llama's Hugging Face code does, so imported q/k weights
    need no permutation. `scaling` rescales the frequencies (see `rope_inv_freq`).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0,
                 scaling: dict[str, Any] | None = None, half: bool = False) -> None:
        super().__init__()
        assert head_dim % 2 == 0, "rotary needs an even head dimension"
        self.half = half
        self.max_len = max_len
        self._rope = (head_dim, base, scaling)
        self._build_tables(None)

    def _build_tables(self, device: torch.device | None) -> None:
        # angles in fp32 even when the model was cast to bf16/fp16 (`model.to(dtype)` casts
        # buffers too): a half-precision angle table is off by whole radians at long positions
        inv_freq = rope_inv_freq(*self._rope)
        if device is not None:
            inv_freq = inv_freq.to(device)
        t = torch.arange(self.max_len, device=inv_freq.device).float()
        freqs = torch.outer(t, inv_freq)  # (T, hd/2)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def angles(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (length, hd/2) of positions start .. start+length-1, in `dtype`."""
        if start + length > self.max_len:
            raise ValueError(f"sequence of {start + length} tokens is longer than model.max_len={self.max_len}")
        if self.cos.dtype != torch.float32:
            self._build_tables(self.cos.device)
        return (self.cos[start:start + length].to(dtype), self.sin[start:start + length].to(dtype))

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x: (B, H, T, hd) -> same shape, rotated for positions start .. start+T-1."""
        cos, sin = self.angles(start, x.size(-2), x.dtype)  # (T, hd/2)
        if self.half:
            return rotate_halves(x, cos, sin)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2)
