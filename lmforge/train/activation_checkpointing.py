"""Activation checkpointing per Transformer block, and the loop's other memory switches.

Training keeps every block's intermediate activations (attention scores, MLP hidden states)
until backward: for a 30-layer model that is most of the memory beyond the weights. With
checkpointing a block keeps only its input; backward re-runs the block's forward to rebuild
the rest (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"). Cost: about one
extra forward per checkpointed block, i.e. ~+33 % compute with every block checkpointed.

Generic over families: every `nn.ModuleList` named `blocks` or `encoder` (GPT, BERT, Llama,
the Transformer seq2seq's decoder and encoder stacks) has every k-th member
(`train.checkpoint_every`) switched to a subclass of its own class whose `forward` runs
through `torch.utils.checkpoint` (non-reentrant). Parameter names, `isinstance` checks, LoRA
layer names, state dicts and FSDP's per-block units are unchanged; blocks run normally when
no gradient is being recorded (evaluation, decoding with a KV cache). The RNG state is
replayed in the recomputation (dropout masks match) and restored afterwards, so a run draws
the same random numbers with checkpointing as without, and resumes exactly.

    apply_memory_options(model, cfg.train)   # once, before DDP/FSDP wrapping (the Trainer does it)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ConfigError

BLOCK_LISTS = ("blocks", "encoder")  # ModuleList attribute names that hold repeated blocks

_SUBCLASSES: dict[type, type] = {}


class _CheckpointedForward:
    """Mixin placed before a block's class: forward through torch.utils.checkpoint."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        parent_forward = super().forward  # the block's own forward, bound to self
        if not torch.is_grad_enabled():
            return parent_forward(*args, **kwargs)
        return checkpoint(parent_forward, *args, use_reentrant=False, **kwargs)


def _checkpointed_class(cls: type) -> type:
    """`cls` with a checkpointed forward, made once per block class."""
    if issubclass(cls, _CheckpointedForward):
        return cls
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Checkpointed{cls.__name__}", (_CheckpointedForward, cls),
                                {"__module__": cls.__module__})
    return _SUBCLASSES[cls]


def block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """(name, ModuleList) of every stack of repeated blocks in `model`."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.ModuleList) and name.rpartition(".")[2] in BLOCK_LISTS]


def enable_activation_checkpointing(model: nn.Module, every: int = 1) -> list[str]:
    """Checkpoint blocks 0, k, 2k, ... of every block stack in `model`, in place.

    Returns the names of the checkpointed blocks; raises ConfigError when the model has no
    block stack (recurrent and convolutional families: their activations are per time step
    or per layer of a fused kernel, which this per-block scheme cannot cut).
    """
    if every < 1:
        raise ConfigError(f"train.checkpoint_every must be >= 1, got {every}")
    stacks = block_lists(model)
    if not stacks:
        raise ConfigError(f"train.activation_checkpointing=true: {type(model).__name__} has no "
                          f"Transformer block stack ({' or '.join(BLOCK_LISTS)}) to checkpoint")
    names = []
    for stack_name, stack in stacks:
        for i, block in enumerate(stack):
            if i % every == 0:
                block.__class__ = _checkpointed_class(type(block))
                names.append(f"{stack_name}.{i}")
    return names


def disable_activation_checkpointing(model: nn.Module) -> None:
    """Undo `enable_activation_checkpointing` (blocks get their own class back)."""
    for module in model.modules():
        if isinstance(module, _CheckpointedForward):
            mro = type(module).__mro__
            module.__class__ = mro[mro.index(_CheckpointedForward) + 1]


def checkpointed_blocks(model: nn.Module) -> int:
    """How many blocks of `model` run checkpointed."""
    return sum(isinstance(m, _CheckpointedForward) for m in model.modules())


def apply_memory_options(model: nn.Module, train: Any) -> list[str]:
    """Apply the `train.*` memory switches to `model` in place; returns what was done (for the log).

    activation_checkpointing / checkpoint_every: per-block checkpointing (above).
    chunked_ce / ce_chunk_size: a causal LM head computes its loss chunk by chunk
    (`lmforge.nn.chunked_ce`), never holding the (B, T, V) logits.
    base_dtype=int8: the frozen linear layers of a LoRA run's backbone held in int8
    (`lmforge.nn.quant`); call after the base weights are loaded.
    """
    done = []
    if getattr(train, "base_dtype", "") == "int8":
        from ..nn.quant import int8_bytes_saved, quantize_frozen_base

        names = quantize_frozen_base(model)
        if not names:
            raise ConfigError("train.base_dtype=int8 holds a frozen base in int8, and this model "
                              "has no frozen linear layer: use it with LoRA (lora.rank ...)")
        done.append(f"int8 frozen base: {len(names)} linear layers, "
                    f"{int8_bytes_saved(model) / 2**20:.1f} MiB saved")
    if getattr(train, "activation_checkpointing", False):
        names = enable_activation_checkpointing(model, int(getattr(train, "checkpoint_every", 1)))
        done.append(f"activation checkpointing on {len(names)} blocks")
    if getattr(train, "chunked_ce", False):
        heads = [m for m in model.modules() if hasattr(m, "chunked_loss")]
        if not heads:
            raise ConfigError(f"train.chunked_ce=true: {type(model).__name__} has no causal "
                              "LM head whose loss could be chunked")
        size = int(getattr(train, "ce_chunk_size", 0)) or None
        for head in heads:
            head.chunked_loss, head.loss_chunk_size = True, size
        done.append(f"chunked cross-entropy ({size or 'auto'} rows per chunk)")
    return done
