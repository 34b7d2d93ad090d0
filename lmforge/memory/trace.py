"""Activation bytes per block, measured by running small copies of the model.

What autograd keeps for backward depends on every detail of a block (which ops save their
input or output, dropout masks, LoRA's extra matmuls, autocast's bf16 copies of frozen
weights, the attention kernel), so instead of a formula per family this module runs the
real block: a 1-block and a 2-block copy of the model (same widths, tiny vocabulary) for one
and for two and three rows of `seq` tokens, recording every tensor saved for backward that is not a
parameter. Two depths separate one block from the embedding and final norm; two batch sizes
separate the per-row part from what a block keeps regardless of batch (weight casts).
Sequences longer than TRACE_MAX_SEQ are traced at that length and scaled per token (exact
for attention kernels that keep O(T) per row, as SDPA's flash / memory-efficient paths do).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig

TRACE_MAX_SEQ = 256
TRACE_VOCAB = 256
ROWS = (2, 3)  # batch sizes traced (a batch of 1 takes shortcuts in some kernels)


@dataclass
class BlockTrace:
    """Bytes autograd keeps: per block and outside the blocks, as const + per_row * rows."""

    block_const: float
    block_per_row: float
    outside_const: float
    outside_per_row: float
    seq_scale: float  # traced rows were this many times shorter than the real ones

    def block(self, rows: int) -> float:
        return self.block_const + self.block_per_row * rows * self.seq_scale

    def outside(self, rows: int) -> float:
        return self.outside_const + self.outside_per_row * rows * self.seq_scale


def _saved_bytes(model: nn.Module, ids: torch.Tensor, precision: str) -> int:
    """Bytes of distinct storages saved for backward by model.backbone(ids), leaving out the
    model's own parameters and buffers (an int8 weight saved by reference is no activation)."""
    params = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else torch.autocast("cpu", enabled=False))
    with autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if hasattr(model, "backbone"):
            out = model.backbone(ids)[0]
        else:  # an encoder-decoder: the ids as source and as target
            out = model(ids, ids)[0]
    seen[out.untyped_storage().data_ptr()] = 0  # the output belongs to the head's account
    return sum(seen.values())


def trace_blocks(config: ModelConfig, seq: int, precision: str, prepare: Any) -> BlockTrace:
    """Measure a block's saved activations for `config` (see module docstring).

    `prepare(model)` applies the run's LoRA / freezing / int8 to each small copy.
    """
    traced_seq = min(seq, TRACE_MAX_SEQ)
    measured = {}
    state = torch.random.get_rng_state()
    try:
        for layers in (1, 2):
            small = dataclasses.replace(config, n_layers=layers, vocab_size=TRACE_VOCAB,
                                        max_len=max(config.max_len, traced_seq), extra=dict(config.extra))
            if "enc_layers" in small.extra or "dec_layers" in small.extra:
                small.extra.update(enc_layers=layers, dec_layers=layers)
            from ..models.build import build_model

            model = prepare(build_model(small)).train()
            for rows in ROWS:
                ids = torch.randint(1, TRACE_VOCAB, (rows, traced_seq))
                measured[layers, rows] = _saved_bytes(model, ids, precision)
            del model
    finally:
        torch.random.set_rng_state(state)
    a, b = ROWS
    block = {rows: measured[2, rows] - measured[1, rows] for rows in ROWS}
    outside = {rows: measured[1, rows] - block[rows] for rows in ROWS}
    block_per_row = (block[b] - block[a]) / (b - a)
    outside_per_row = (outside[b] - outside[a]) / (b - a)
    return BlockTrace(block_const=block[a] - a * block_per_row, block_per_row=block_per_row,
                      outside_const=outside[a] - a * outside_per_row,
                      outside_per_row=outside_per_row, seq_scale=seq / traced_seq)
