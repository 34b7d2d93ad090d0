"""Distributed data parallel under `torchrun`: PyTorch's own engine, nothing home-made.

`torchrun --nproc_per_node N -m lmforge pretrain ...` sets RANK / WORLD_SIZE / LOCAL_RANK;
`setup()` joins the process group (nccl on CUDA, gloo on CPU) and the trainer wraps the model
in DistributedDataParallel. Without those variables everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def current() -> DistInfo:
    """Rank and world size of this process (from torchrun's environment variables)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def setup(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; returns this process's DistInfo."""
    info = current()
    if info.world_size > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current()


def device_for(info: DistInfo, device: torch.device) -> torch.device:
    """Each rank takes its own GPU."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def wrap_model(model: nn.Module, info: DistInfo, cfg) -> nn.Module:
    """DDP (or FSDP with train.fsdp) when distributed; the model itself otherwise."""
    if not info.enabled:
        return model
    if getattr(cfg, "fsdp", False):
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
        return model
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def maybe_no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on accumulation micro-steps (all but the last)."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
