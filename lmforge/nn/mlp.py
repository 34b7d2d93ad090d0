"""Position-wise feed-forward block of a Transformer."""

from __future__ import annotations

import torch
from torch import nn

from .activation import get_activation
from .projections import project


class MLP(nn.Module):
    """Linear(D -> F), activation, Linear(F -> D), dropout."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.act = get_activation(activation)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.proj.is_residual_proj = True  # scaled init (GPT-2): see models/gpt.py
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))  # (B, T, D)


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer, 2020): down(act(gate(x)) * up(x)), act = SiLU in Llama.

    The three projections are named `gate`, `up`, `down` so LoRA targets read like the
    Llama papers and Hugging Face checkpoints (`mlp.gate`, `mlp.up`, `mlp.down`).
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "silu", dropout: float = 0.0,
                 bias: bool = False) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.down.is_residual_proj = True  # scaled init (GPT-2): see models/gpt.py
        self.act = get_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = project(x, self.gate, self.up)  # shared where possible (projections.py)
        return self.dropout(self.down(self.act(gate) * up))  # (B, T, D)
