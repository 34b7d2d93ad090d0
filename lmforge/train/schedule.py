"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int,
          schedule: str = "cosine") -> float:
    """Learning rate for optimizer step `step` (0-based).

    Linear warmup from lr/warmup to lr over `warmup_steps`, then `schedule` from lr down to
    min_lr at `decay_steps`, constant afterwards.

    >>> lr_at(0, 1.0, 0.1, 10, 100)
    0.1
    >>> lr_at(100, 1.0, 0.1, 10, 100)
    0.1
    """
    if schedule == "constant":
        return lr if step >= warmup_steps else lr * (step + 1) / warmup_steps
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 -> 1
    if schedule == "linear":
        return lr - (lr - min_lr) * progress
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
