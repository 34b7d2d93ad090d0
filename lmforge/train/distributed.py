"""Data parallel training under `torchrun`: PyTorch's own engine, nothing home-made.

    torchrun --standalone --nproc_per_node 2 -m lmforge pretrain --config configs/shakespeare-char-gpt.yaml
    torchrun --nnodes 2 --node_rank 0 --rdzv_endpoint HOST:29500 --nproc_per_node 8 -m lmforge pretrain ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; `setup()` joins the process group (nccl on CUDA,
gloo on CPU) and the trainer wraps the model in DistributedDataParallel, or shards it with
FSDP (`torch.distributed.fsdp.fully_shard`) when `train.fsdp=true`. Without those variables
every function here is a no-op, so single-process code calls them unconditionally.

The rules the trainer keeps (see `lmforge.train.loop`): every rank calls every collective in
the same order (the helpers below are all collectives when distributed); rank 0 alone writes
files; decisions that change control flow (stop, early stopping, divergence) are taken from
reduced or broadcast values so that all ranks take them together.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size, rank on this machine."""

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


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; returns this process's DistInfo."""
    info = current()
    if info.world_size > 1 and not dist.is_initialized():
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
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


def cleanup() -> None:
    """Leave the process group (end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- collectives


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _active():
        dist.barrier()


@contextlib.contextmanager
def local_main_first() -> Iterator[None]:
    """The first process of each machine runs the body first (e.g. fills a disk cache), the
    others after it, so they read the cache instead of racing to write it."""
    first = current().local_rank == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over ranks (a new tensor; the input is untouched)."""
    if not _active():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)  # sum
    return out / dist.get_world_size()


def any_rank(*flags: bool, device: torch.device | str = "cpu") -> list[bool]:
    """For each flag: True if it is True on any rank (stop requests, time budgets)."""
    if not _active():
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t)  # sum of 0/1 votes
    return [bool(v > 0) for v in t.tolist()]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (picklable Python objects: metrics, tokenizer JSON)."""
    if not _active():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def from_rank0(fn: Callable[[], Any]) -> Any:
    """`fn()` run by rank 0 alone; every rank gets its result, or raises its error (so that a
    bad --base or run directory stops the whole job instead of leaving ranks waiting)."""
    if not _active():
        return fn()
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as err:  # re-raised below, on every rank
            error = err
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error
    return result


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's `obj`, as a list on rank 0 (None elsewhere); [obj] in a single process."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


# --------------------------------------------------------------------------- wrapping


def fsdp_problem(device: torch.device, cfg: Any) -> str | None:
    """Why `train.fsdp=true` cannot run here (a one-line message), or None when it can."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return (f"train.fsdp=true needs torch.distributed.fsdp.fully_shard (PyTorch >= 2.6); "
                f"this is torch {torch.__version__}")
    if device.type not in ("cuda", "cpu"):
        return (f"train.fsdp=true runs on CUDA (nccl) or CPU (gloo), not on {device.type}; "
                "use DDP (train.fsdp=false) or one process")
    backend = dist.get_backend() if dist.is_initialized() else None
    if device.type == "cuda" and backend not in (None, "nccl"):
        return f"train.fsdp=true on CUDA needs the nccl backend, this job uses {backend}"
    if getattr(cfg, "optimizer", "adamw") in ("lbfgs", "newton", "newton_cg"):
        return (f"train.fsdp=true cannot shard train.optimizer={cfg.optimizer} (it needs the whole "
                "flat parameter vector); use adamw, adam, sgd, rmsprop or adagrad")
    return None


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """Submodules sharded on their own: the members of every ModuleList (Transformer blocks,
    recurrent layers), so that only one block's weights are gathered at a time."""
    units = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            units.extend(m for m in module if any(True for _ in m.parameters()))
    return units[::-1]  # inner units before the ones holding them: fully_shard goes bottom-up


def wrap_model(model: nn.Module, info: DistInfo, cfg: Any) -> nn.Module:
    """DDP (or FSDP with train.fsdp) when distributed; the model itself otherwise.

    FSDP shards the model in place (every block, then the root), so the returned module is
    `model` itself and the optimizer must be built after this call.
    """
    if not info.enabled:
        return model
    device = next(model.parameters()).device
    if getattr(cfg, "fsdp", False):
        problem = fsdp_problem(device, cfg)
        if problem:
            raise ConfigError(problem)
        from torch.distributed.fsdp import fully_shard

        for unit in _shard_units(model):
            fully_shard(unit)
        fully_shard(model)
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def is_fsdp(model: nn.Module) -> bool:
    """True when `model` was sharded by `fully_shard`."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def maybe_no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on accumulation micro-steps (all but the last)."""
    if sync:
        return contextlib.nullcontext()
    model = getattr(model, "_orig_mod", model)  # under torch.compile: the module it wraps
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if is_fsdp(model):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    # FSDP: keep unsharded gradients locally and reduce-scatter once, on the last micro-step
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


# --------------------------------------------------------------------------- checkpoints


class StateView:
    """A stand-in for a module whose only job is to hand over a (gathered) state dict."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def full_weights(model: nn.Module) -> nn.Module | StateView | None:
    """Something `save_weights` can write: the model itself, or under FSDP its gathered full
    state dict on rank 0 (None on the other ranks). A collective under FSDP."""
    if not is_fsdp(model):
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return StateView(state) if current().rank == 0 else None


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict; under FSDP gathered in full (a collective)."""
    if not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    """Restore `optimizer_state()`; under FSDP each rank keeps its shard of the full state."""
    if not is_fsdp(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def broadcast_module(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's (unwrapped) model, in place."""
    if not _active():
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
