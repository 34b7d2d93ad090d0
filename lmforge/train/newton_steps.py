"""What the Newton optimizers share: closures with a fixed RNG, the line search, damping."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from .hvp import (set_flat_, unflatten)

Closure = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------- helpers


def _accepts(fn: Callable, name: str) -> bool:
    """Whether `fn` can be called with keyword `name`."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class _RngSnapshot:
    """The CPU and accelerator RNG state at the start of a step, to replay for each evaluation."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.dev = None
        if device.type == "cuda":
            self.dev = torch.cuda.get_rng_state(device)
        elif device.type == "mps":
            self.dev = torch.mps.get_rng_state()

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(self.dev, self.device)
        elif self.device.type == "mps":
            torch.mps.set_rng_state(self.dev)


class _Evaluator:
    """Calls the closure in its `backward=False` form with a replayed RNG and optional extras."""

    def __init__(self, closure: Closure, device: torch.device) -> None:
        self.closure = closure
        self.rng = _RngSnapshot(device)
        self.has_outputs = _accepts(closure, "return_outputs")
        self.has_fraction = _accepts(closure, "fraction")

    def __call__(self, *, outputs: bool = False, fraction: float = 1.0):
        """The loss, or (loss, outputs) with `outputs=True`; graph kept when grad is enabled."""
        kwargs = {}
        if outputs:
            kwargs["return_outputs"] = True
        if fraction < 1.0:
            kwargs["fraction"] = fraction
        self.rng.restore()
        result = self.closure(backward=False, **kwargs)
        loss, out = result if outputs else (result, None)
        if loss.dtype not in (torch.float32, torch.float64):
            loss = loss.float()  # bf16 / fp16 autocast: curvature in fp32
        return (loss, out) if outputs else loss

    @torch.no_grad()
    def loss_at(self, params: list[torch.Tensor], theta: torch.Tensor) -> float:
        """f(theta) without a graph; the parameters are left at theta."""
        set_flat_(params, theta)
        return float(self())


def _single_group(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    if len(optimizer.param_groups) != 1:
        raise ValueError(f"{type(optimizer).__name__} does not support parameter groups; "
                         "pass one list of parameters")
    return [p for p in optimizer.param_groups[0]["params"] if p.requires_grad]


def _set_grads(params: list[torch.Tensor], g: torch.Tensor) -> None:
    """Leave the gradient in .grad, as a first-order optimizer would (for logging)."""
    for p, chunk in zip(params, unflatten(g.detach(), params)):
        p.grad = chunk.to(p.dtype).clone()


def _line_search(f: Callable[[float], float], f0: float, slope: float, t0: float, *,
                 c1: float, shrink: float, max_evals: int,
                 first: float | None = None) -> tuple[float, float, int]:
    """Backtracking Armijo search: the first t = t0 shrink^k with f(t) <= f0 + c1 t slope.

    Returns (t, f(t), evaluations); t = 0 (and f0) when no trial point qualifies. `first`
    is f(t0) when the caller already knows it.
    """
    t, evals = t0, 0
    value = first if first is not None else f(t)
    evals += first is None
    while True:
        if math.isfinite(value) and value <= f0 + c1 * t * slope:
            return t, value, evals
        if evals >= max_evals:
            return 0.0, f0, evals
        t *= shrink
        value, evals = f(t), evals + 1


def _adapt(damping: float, rho: float, up: float, down: float, floor: float) -> float:
    """Levenberg–Marquardt rule (Martens 2010, sec. 4.1): trust the model more when rho is high."""
    if not math.isfinite(rho) or rho < 0.25:
        return max(damping * up, floor)
    if rho > 0.75:
        return damping * down
    return damping



def _with_grad(fn: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        return fn(v)
