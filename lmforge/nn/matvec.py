"""Decoding one sequence on a CPU: the matrix-vector products through one compiled kernel.

A decoding step of one sequence reads every weight matrix once to multiply it by one
vector, so its speed is the speed at which those products stream the weights from memory.
PyTorch's CPU kernel for a one-row `F.linear` reads about 12 GB/s on the 2-core AVX2 machine
lmforge is measured on, where a plain sum over the same weights reads 25-29 GB/s. The same
product written as an elementwise multiply and a row sum, compiled by TorchInductor into
one vectorized loop, reads 19-25 GB/s: `benchmarks/smollm2.py` shows what it gives end to
end. The sums run in another order than the BLAS kernel's, so results agree to float
rounding (about 1e-5), not bit for bit.

    with matvec_linears(model):   # while inside: plain nn.Linear layers fed one row use it
        ...decode...

Layers that read the same input (q, k, v; gate, up) go through `one_row_projections` (from
`nn/projections.project`): one compiled call for all of them, since each call of a compiled
function costs ~20 us of dispatch, a tenth of a small product.

The first use compiles the kernel (a few seconds; TorchInductor caches it on disk for the
next process). Where torch.compile cannot run (no C++ compiler), decoding warns once and
goes on with the usual kernel.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_compiled: dict[Callable, Any] = {}  # fn -> its compiled version
_unavailable = False  # set once compiling has failed: everything runs eagerly after that


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, list):
        return [_detached(v) for v in value]
    return value


def compiled(fn: Callable, *args: Any) -> Any:
    """`fn(*args)` through torch.compile (dynamic shapes, one graph), or None where
    torch.compile cannot run here (warned once; the caller then runs its eager code)."""
    global _unavailable
    if _unavailable:
        return None
    try:
        if fn not in _compiled:
            _compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
        # plain tensors, not Parameters: torch.compile keeps a parameter's shape static,
        # which would compile once per weight shape; this way shapes stay symbolic and
        # one compile serves every layer of every model
        return _compiled[fn](*_detached(list(args)))
    except Exception as err:  # noqa: BLE001 - e.g. no C++ compiler: decode without it
        _unavailable = True
        print(f"lmforge: compiled decoding is unavailable ({type(err).__name__}: "
              f"{str(err).splitlines()[0][:160]}); decoding with the usual kernels",
              file=sys.stderr)
        return None


def _mul_sums(weights: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    return [(w * x).sum(-1) for w in weights]


def matvecs(weights: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """[w (N_i, K) @ x (K,) -> (N_i,) for each w], through one compiled call when it works."""
    ys = compiled(_mul_sums, weights, x)
    return ys if ys is not None else [F.linear(x, w) for w in weights]


def matvec(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """weight (N, K) @ x (K,) -> (N,)."""
    return matvecs([weight], x)[0]


def _one_row(x: torch.Tensor) -> bool:
    return x.numel() == x.size(-1) and not (torch.is_grad_enabled() and x.requires_grad)


def is_one_row_linear(layer: nn.Module) -> bool:
    """A plain nn.Linear given the one-row forward by an enclosing `matvec_linears`."""
    return "_one_row_forward" in layer.__dict__


def one_row_projections(x: torch.Tensor, layers: tuple[nn.Module, ...]) -> list[torch.Tensor] | None:
    """`[layer(x) for layer in layers]` as one compiled call, or None unless x is one row
    and every layer is a plain linear layer inside a `matvec_linears` block."""
    if not (_one_row(x) and all(is_one_row_linear(layer) for layer in layers)):
        return None
    ys = matvecs([layer.weight for layer in layers], x.reshape(-1))
    return [(y if layer.bias is None else y + layer.bias).view(*x.shape[:-1], -1)
            for y, layer in zip(ys, layers)]


def _one_row_forward(layer: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if not _one_row(x):
            return F.linear(x, layer.weight, layer.bias)  # several rows (a prefill): BLAS
        y = matvec(layer.weight, x.reshape(-1)).view(*x.shape[:-1], -1)
        return y if layer.bias is None else y + layer.bias
    return forward


@contextlib.contextmanager
def matvec_linears(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """While inside, every plain `nn.Linear` of `model` on the CPU computes a one-row input
    with `matvec` (a LoRA wrapper keeps its forward; the plain layer inside it uses matvec;
    int8 layers keep theirs)."""
    layers = [m for m in model.modules() if type(m) is nn.Linear
              and m.weight.device.type == "cpu" and "forward" not in m.__dict__] if enabled else []
    for layer in layers:
        layer.forward = layer._one_row_forward = _one_row_forward(layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward, layer._one_row_forward
