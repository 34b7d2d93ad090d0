"""Decoding one sequence through a Llama block as one compiled call (`--compile`).

A batch-1 decoding step is memory-bound: it reads every weight once. `nn/matvec.py` makes
those reads fast; what is left is the cost of running ~20 small operators per block (norms,
rotary, attention over the cache, SiLU, residual adds), each a separate PyTorch call of
10-20 us, 600 of them per token in a 30-layer model: a fifth of the step on the 2-core
machine lmforge is measured on. `block_step` writes a whole block for one row - RMSNorm,
q/k/v, rotary, attention over the cached keys plus the new one, o, residual, RMSNorm,
SwiGLU, residual - as one function that TorchInductor compiles into a handful of fused
loops; every block of the model shares the compiled code (same shapes, the cache length a
symbolic size).

The new key and value are returned and written into the cache by the caller, so the graph
mutates none of its inputs. Results agree with the eager block to float rounding, as
`matvec` does.

`Llama.forward` takes this path inside `matvec_linears` (decoding with `--compile`) when a
step is one row, with a cache and no mask, and the block's layers are plain linear layers
(no LoRA wrapper, not int8); everything else takes the eager path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.matvec import compiled, is_one_row_linear
from ..nn.norm import rms_norm
from ..nn.positional import rotate_halves

_STEPS: dict[tuple, Any] = {}  # compiled block step per static shape (heads, norms, biases)


def _linear(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = (w * x).sum(-1)  # one row: a streaming multiply-sum, as nn/matvec.py
    return y if b is None else y + b


def _make_step(n_heads: int, n_kv: int, head_dim: int, eps: float, qk_eps: float | None):
    group = n_heads // n_kv

    def step(x, w: list[torch.Tensor], b: list[torch.Tensor | None], qk: list[torch.Tensor],
             cos, sin, keys, values):
        """x (D,); w = [attn_norm, q, k, v, o, mlp_norm, gate, up, down]; b = q/k/v biases;
        qk = [q_norm, k_norm] or []; cos/sin (hd/2,) of this position; keys/values
        (Hkv, S, hd) cached before it -> (new x, new key (Hkv, hd), new value (Hkv, hd))."""
        h = rms_norm(x, w[0], eps)
        q = _linear(w[1], h, b[0]).view(n_heads, head_dim)
        k = _linear(w[2], h, b[1]).view(n_kv, head_dim)
        v = _linear(w[3], h, b[2]).view(n_kv, head_dim)
        if qk:
            q, k = rms_norm(q, qk[0], qk_eps), rms_norm(k, qk[1], qk_eps)
        q, k = rotate_halves(q, cos, sin), rotate_halves(k, cos, sin)
        qg = q.view(n_kv, group, 1, head_dim)
        scale = head_dim ** -0.5
        # the new key joins the cached ones (a copy of ~100 KB) so that the attention output
        # is one plain reduction: written as two partial sums combined afterwards, TorchInductor
        # recomputed that combination inside the o product for every weight (2x slower)
        keys = torch.cat((keys, k[:, None]), dim=1)  # (Hkv, S+1, hd)
        values = torch.cat((values, v[:, None]), dim=1)
        scores = (qg * keys[:, None]).sum(-1).float() * scale  # (Hkv, G, S+1)
        p = scores.softmax(-1).to(x.dtype)
        y = (p[..., None] * values[:, None]).sum(-2)  # (Hkv, G, hd)
        x = x + _linear(w[4], y.reshape(-1), None)
        h = rms_norm(x, w[5], eps)
        act = F.silu(_linear(w[6], h, None)) * _linear(w[7], h, None)
        x = x + _linear(w[8], act, None)
        return x, k, v

    return step


def can_fuse(block: nn.Module) -> bool:
    """The block's projections are plain linear layers inside `matvec_linears`, SiLU-gated."""
    a, m = block.attn, block.mlp
    return (all(is_one_row_linear(layer) for layer in (a.q, a.k, a.v, a.o, m.gate, m.up, m.down))
            and isinstance(m.act, nn.SiLU) and a.rotary.half)


def block_step(block: nn.Module, x: torch.Tensor, cache: Any) -> torch.Tensor | None:
    """x (1, 1, D) -> the block's output for the next position of `cache`, the cache
    advanced by one; None where compiling failed (the caller runs the eager block)."""
    a = block.attn
    start = cache.length
    cos, sin = a.rotary.angles(start, 1, x.dtype)  # (1, hd/2)
    first = max(0, start + 1 - a.window) if a.window else 0  # Mistral: the last `window` keys
    qk_eps = a.q_norm.eps if a.q_norm is not None else None
    key = (a.n_heads, a.n_kv_heads, a.head_dim, block.attn_norm.eps, qk_eps)
    if key not in _STEPS:
        _STEPS[key] = _make_step(*key)
    weights = [block.attn_norm.weight, a.q.weight, a.k.weight, a.v.weight, a.o.weight,
               block.mlp_norm.weight, block.mlp.gate.weight, block.mlp.up.weight, block.mlp.down.weight]
    biases = [a.q.bias, a.k.bias, a.v.bias]
    norms = [a.q_norm.weight, a.k_norm.weight] if a.q_norm is not None else []
    out = compiled(_STEPS[key], x.reshape(-1), weights, biases, norms, cos[0], sin[0],
                   cache.k[0, :, first:start], cache.v[0, :, first:start])
    if out is None:
        return None
    y, k, v = out
    cache.append(k[None, :, None], v[None, :, None])  # (1, Hkv, 1, hd); refuses a full cache
    return y.view(1, 1, -1)
