"""The task contract: what the Trainer (`train/loop.py`) calls, and what is optional.

A task owns the model being trained, its batches, its loss and its metrics; the loop knows
nothing task-specific. `LanguageModelingTask` (tasks/lm.py) is the reference implementation.
Each task also registers itself once in `tasks/registry.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Task(Protocol):
    """Required by the Trainer."""

    model: nn.Module  # the module being trained (the Trainer wraps it for DDP / FSDP)
    metric_names: list[str]  # extra metrics.csv columns, e.g. ["ppl"] or ["accuracy", "macro_f1"]
    monitor: tuple[str, str]  # (metric, "min" | "max") for best checkpoint and early stopping

    def next_batch(self) -> Any:
        """The next training micro-batch, already on the device (this rank's share)."""

    def loss(self, batch: Any, model: nn.Module | None = None) -> torch.Tensor:
        """Scalar loss of a batch, with its graph; `model` is the (possibly wrapped) module
        to run, default `self.model`."""

    def batch_tokens(self, batch: Any) -> float:
        """Tokens (or examples) in a batch: the throughput and MFU columns count these."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics; must include "loss" and every name in `metric_names`."""

    def state_dict(self) -> dict[str, Any]:
        """Data position (and anything random) for an exact resume."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class TaskHooks(Protocol):
    """Optional: the Trainer uses each one only when the task defines it."""

    keep_best: bool  # also write best.safetensors at each improvement (fine-tuning tasks)
    flops_per_unit: float  # training FLOPs per unit of batch_tokens (default: per token, mfu.py)

    def on_evaluate(self, step: int, run_dir: Path) -> None:
        """Called on rank 0 after each evaluation (samples.txt for language models)."""
