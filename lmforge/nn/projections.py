"""Projections that read the same input (q, k, v; gate, up): one product where they can share it.

    q, k, v = project(x, self.q, self.k, self.v)

is `[layer(x) for layer in layers]`, computed together where that is cheaper:

- decoding one row inside `matvec_linears` (`--compile`): one compiled multiply-sum call
  for all the plain linear layers (`nn/matvec.py`);
- LoRA layers without dropout: their A matrices stacked into one product (`nn/lora.py`),
  forward and backward.

Everything else calls each layer, so a model keeps one code path.
"""

from __future__ import annotations

import torch
from torch import nn

from .lora import shared_input_lora
from .matvec import one_row_projections


def project(x: torch.Tensor, *layers: nn.Module) -> list[torch.Tensor]:
    """`[layer(x) for layer in layers]`, shared where it can be (see the module doc)."""
    out = one_row_projections(x, layers)
    if out is None:
        out = shared_input_lora(x, layers)
    return out if out is not None else [layer(x) for layer in layers]
