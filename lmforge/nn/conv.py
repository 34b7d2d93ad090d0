"""1-D convolution blocks over token sequences, in (B, T, C) layout.

- `CausalConv1d`: a dilated convolution that sees only the past. It carries its left context
  as a *window* (the last (kernel_size - 1) * dilation inputs), so a sequence fed in pieces,
  down to one token at a time, gives exactly the outputs of one full pass.
- `ConvBlock`: a pre-LayerNorm residual block (WaveNet / ByteNet family): a dilated conv with
  a gated (tanh * sigmoid) or plain activation, then a position-wise MLP, each added back.
- `MultiWidthConv`: Kim (2014) parallel filters of several widths, concatenated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activation import get_activation
from .mlp import MLP


def receptive_field(kernel_size: int, dilations: list[int]) -> int:
    """Tokens a stack of causal convolutions sees (including the current one).

    >>> receptive_field(3, [1, 2, 4])   # 1 + 2 * (1 + 2 + 4)
    15
    """
    return 1 + sum((kernel_size - 1) * d for d in dilations)


def last_window(padded: torch.Tensor, size: int,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The `size` positions of `padded` (B, size + T, C) that end at each row's last real token.

    Without `lengths` that is simply the last `size` positions. Row b with length L ends at
    padded index size + L - 1, so its window starts at index L.
    """
    B, _, C = padded.shape
    if lengths is None:
        return padded[:, padded.size(1) - size:]  # (B, size, C)
    idx = lengths[:, None] + torch.arange(size, device=padded.device)[None]  # (B, size)
    return padded.gather(1, idx[:, :, None].expand(B, size, C))  # (B, size, C)


class SameConv1d(nn.Conv1d):
    """Non-causal conv whose output has the input's length: (k-1)*d zeros split around it
    (the extra one on the right for even spans, like padding="same", without its copy warning).
    Works in (B, C, T) layout like nn.Conv1d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = (self.kernel_size[0] - 1) * self.dilation[0]
        return super().forward(F.pad(x, (total // 2, total - total // 2)))  # (B, out, T)


class CausalConv1d(nn.Module):
    """Dilated causal convolution: y[t] depends on x[t - (k-1)d], ..., x[t - d], x[t]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 bias: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.context = (kernel_size - 1) * dilation  # past inputs needed per output
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor, window: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> (y (B, T, out), new window (B, context, C)).

        `window` holds the inputs just before x (zeros at the start of a sequence); `lengths`
        (B,) makes the returned window end at each row's last real token (right padding).
        """
        B, T, C = x.shape
        if window is None:
            window = x.new_zeros(B, self.context, C)
        padded = torch.cat([window.to(x.dtype), x], dim=1)  # (B, context + T, C)
        y = self.conv(padded.transpose(1, 2)).transpose(1, 2)  # (B, T, out)
        return y, last_window(padded, self.context, lengths)


class ConvBlock(nn.Module):
    """x + dropout(act(conv(LN(x)))), then x + MLP(LN(x)); causal or same-padded.

    `gated` uses WaveNet's tanh(a) * sigmoid(b) on a conv of twice the width instead of
    `activation`. The non-causal variant zeroes padded positions before the conv, so real
    positions see exactly what an unpadded, shorter sequence would give them.
    """

    def __init__(self, d_model: int, kernel_size: int, dilation: int, d_ff: int,
                 activation: str = "gelu", gated: bool = False, dropout: float = 0.0,
                 causal: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.causal, self.gated = causal, gated
        width = 2 * d_model if gated else d_model
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        if causal:
            self.conv = CausalConv1d(d_model, width, kernel_size, dilation, bias)
        else:
            self.conv = SameConv1d(d_model, width, kernel_size, dilation=dilation, bias=bias)
        self.act = get_activation(activation)
        self.drop = nn.Dropout(dropout)
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, d_ff, activation, dropout, bias)

    def forward(self, x: torch.Tensor, window: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, D) -> (x (B, T, D), new window or None for the non-causal block)."""
        h = self.ln1(x)  # (B, T, D)
        if self.causal:
            h, window = self.conv(h, window, lengths)  # (B, T, width)
        else:
            if mask is not None:
                h = h * mask[:, :, None]  # padded positions act like the zero padding
            h = self.conv(h.transpose(1, 2)).transpose(1, 2)  # (B, T, width)
            window = None
        if self.gated:
            a, b = h.chunk(2, dim=-1)
            h = torch.tanh(a) * torch.sigmoid(b)  # (B, T, D)
        else:
            h = self.act(h)
        x = x + self.drop(h)
        return x + self.mlp(self.ln2(x)), window


class MultiWidthConv(nn.Module):
    """Kim (2014): parallel same-padded convs of widths `widths`, activation, concatenated.

    (B, T, C) -> (B, T, len(widths) * out_channels); pooling over time is the head's job.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: list[int],
                 activation: str = "relu", bias: bool = True) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            SameConv1d(in_channels, out_channels, w, bias=bias) for w in widths
        )
        self.act = get_activation(activation)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            x = x * mask[:, :, None]  # (B, T, C)
        x = x.transpose(1, 2)  # (B, C, T)
        return torch.cat([self.act(conv(x)) for conv in self.convs], dim=1).transpose(1, 2)

