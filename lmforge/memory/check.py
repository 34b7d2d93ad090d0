"""Refuse at start-up a run that will not fit, instead of the kernel killing it an hour in.

    check_fits(cfg.model, cfg.train, device)    # one call where a run starts, before the model

Available memory: CUDA `mem_get_info` (free bytes on the device); CPU `MemAvailable` from
/proc/meminfo (psutil elsewhere, when installed), shared by the LOCAL_WORLD_SIZE processes
torchrun starts on the machine. `train.check_memory=false` skips the check.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from ..config import ConfigError, ModelConfig, TrainConfig
from .estimate import MemoryEstimate, estimate_memory


def human_bytes(n: float) -> str:
    """1536 -> '0.0 MiB'; 3 * 2**30 -> '3.00 GiB'."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def process_rss() -> float:
    """Resident bytes of this process now (0 when the platform does not say)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return float(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:
        return 0.0


def available_bytes(device: torch.device) -> float | None:
    """Bytes a new allocation can still get on `device`, or None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:
        return None


def predict(model_config: ModelConfig, train: TrainConfig, device: torch.device,
            seq: int | None = None, mode: str | None = None,
            loads_weights: bool | None = None) -> MemoryEstimate:
    """The estimate for a run about to start here (the runtime row from this process)."""
    lora = model_config.extra.get("lora")
    mode = mode or ("lora" if lora else "full")
    # every training process imports torch._dynamo (optimizers, checkpointing; ~70 MB on
    # CPU): count it among the libraries the run holds before its model exists
    import torch._dynamo  # noqa: F401

    runtime = process_rss() if device.type == "cpu" else 0.0
    if loads_weights is None:
        loads_weights = bool(train.init_from)
    return estimate_memory(model_config, train, train.batch_size, seq or model_config.max_len,
                           mode=mode, device=device.type, runtime_bytes=runtime,
                           loads_weights=loads_weights)


def check_fits(model_config: ModelConfig, train: TrainConfig, device: torch.device,
               seq: int | None = None, mode: str | None = None,
               loads_weights: bool | None = None,
               log: Callable[[str], Any] | None = None) -> MemoryEstimate | None:
    """Raise ConfigError when the run's predicted peak exceeds the memory available here.

    Call before the model is built. `seq` defaults to model.max_len, `mode` to lora when
    model.extra.lora is set, `loads_weights` (starts from a weights file) to train.init_from. Returns the estimate (None when skipped or unknown).
    """
    if not train.check_memory:
        return None
    free = available_bytes(device)
    if free is None:
        return None
    try:
        est = predict(model_config, train, device, seq, mode, loads_weights)
    except ConfigError:
        return None  # an optimizer or model the estimate does not know: nothing to say
    # on CPU the process's own resident memory is part of the estimate and already in use,
    # and the processes torchrun starts on this machine share what is free
    room = free
    if device.type == "cpu":
        room = free / int(os.environ.get("LOCAL_WORLD_SIZE", "1")) + est.get("runtime")
    if est.peak > room:
        parts = ", ".join(f"{name} {human_bytes(est.get(name))}" for name in
                          ("weights", "optimizer state", "activations", "logits / loss"))
        raise ConfigError(
            f"this run needs about {human_bytes(est.peak)} at its peak and {device.type} has "
            f"{human_bytes(room)} available ({parts}); try train.activation_checkpointing=true, "
            f"train.chunked_ce=true, a smaller train.batch_size with train.grad_accum, LoRA "
            f"with train.base_dtype=int8 (docs/memory.md), or train.check_memory=false to "
            f"start anyway")
    if log is not None:
        log(f"memory: predicted peak {human_bytes(est.peak)} of {human_bytes(room)} available "
            f"on {device.type}")
    return est
