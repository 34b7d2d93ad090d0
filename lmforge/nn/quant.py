"""Frozen base weights held in int8 while LoRA adapters train (weight-only quantization).

A LoRA run never updates its base, so the base only has to be good enough to compute with:
each frozen `nn.Linear` of the backbone becomes an `Int8Linear` holding its weight as int8
with one fp32 scale per output row (symmetric, per channel; the int8 weight-only scheme of
LLM.int8-era tools and torchao's `Int8WeightOnlyConfig`) - a quarter of the fp32 bytes.

    quantize_frozen_base(model)    # after the base weights are loaded, before training

Why not torchao's tensor subclass, which runs on CPU and backpropagates to LoRA's inputs:
its weight-only linear casts the int8 weight to the activation dtype and `mm` saves that
cast for backward, so a training step holds a full-precision copy of every layer's weight
until backward and the memory saved is lost (measured in benchmarks/memory.py); and its
tensors do not save to safetensors. Here one autograd Function saves the int8 weight and
the scales and rebuilds the cast layer by layer in backward.

Checkpoints stay ordinary: the state dict shows each layer as a float32 `weight` (the
dequantized one the run trained with), and loading such a state dict quantizes it again to
the very same int8 values and scales (scales keep 16 significant bits, so `127 * scale` and
`q * scale` are exact in fp32 and re-quantizing is the identity) - resume is exact, and
`merge-lora`, `generate` and exports read the run as any other.
"""

from __future__ import annotations

import torch
from torch import nn

from .chunked_ce import linear_compute_dtype

QMAX = 127  # symmetric int8 range [-127, 127]


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (out, in) float -> (int8 values (out, in), fp32 scale per row (out,)).

    weight ~= q * scale[:, None]; a row's largest magnitude maps to +-127.
    >>> q, s = quantize_rows(torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]]))
    >>> q.tolist(), s.tolist()
    ([[64, -127, 32], [0, 0, 0]], [0.007874011993408203, 1.0])
    """
    w = weight.detach().float()
    amax = w.abs().amax(dim=1)  # (out,)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    mantissa, exponent = torch.frexp(scale)  # keep 16 significant bits (see module docstring)
    scale = torch.ldexp(torch.round(mantissa * 2.0**16) / 2.0**16, exponent)
    q = torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


class _Int8Matmul(torch.autograd.Function):
    """x (..., in) @ (q * scale).T -> (..., out); saves int8 q, not a float copy, for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                dtype: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(q, scale)
        ctx.dtype, ctx.x_dtype = dtype, x.dtype
        with torch.autocast(x.device.type, enabled=False):
            y = x.to(dtype) @ q.to(dtype).T  # (..., out); the cast lives for this line only
            return y * scale.to(dtype)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        q, scale = ctx.saved_tensors
        with torch.autocast(grad_y.device.type, enabled=False):
            g = grad_y.to(ctx.dtype) * scale.to(ctx.dtype)  # (..., out)
            grad_x = (g @ q.to(ctx.dtype)).to(ctx.x_dtype)  # (..., in)
        return grad_x, None, None, None


class Int8Linear(nn.Module):
    """A frozen `nn.Linear` with its weight in int8 (per-row scales); the bias stays as it was."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_rows(linear.weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale.to(linear.weight.device))
        self.bias = None
        if linear.bias is not None:
            self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (out, in) fp32: what this layer computes with."""
        return self.qweight.float() * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = linear_compute_dtype(x.device, x.dtype)
        y = _Int8Matmul.apply(x, self.qweight, self.scale, dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    # the state dict looks like nn.Linear's, so checkpoints load anywhere (see module docstring)
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        destination[prefix + "weight"] = self.weight
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        key = prefix + "weight"
        if key in state_dict:
            w = state_dict[key]
            if tuple(w.shape) != (self.out_features, self.in_features):
                error_msgs.append(f"size mismatch for {key}: {tuple(w.shape)} in the checkpoint, "
                                  f"{(self.out_features, self.in_features)} here")
            else:
                q, scale = quantize_rows(w)
                self.qweight.copy_(q)
                self.scale.copy_(scale)
        elif strict:
            missing_keys.append(key)
        if self.bias is not None:
            if prefix + "bias" in state_dict:
                with torch.no_grad():
                    self.bias.copy_(state_dict[prefix + "bias"])
            elif strict:
                missing_keys.append(prefix + "bias")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _tied_weights(model: nn.Module) -> set[int]:
    """ids of weight tensors owned by more than one module (e.g. a tied output projection)."""
    seen: dict[int, int] = {}
    for module in model.modules():
        w = module._parameters.get("weight")  # owned, not a wrapper's view (LoRALinear.weight)
        if w is not None:
            seen[id(w)] = seen.get(id(w), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def frozen_base_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(name under the backbone, layer) of every frozen, untied `nn.Linear` of `model.backbone`:
    what `quantize_frozen_base` turns into int8 (and `lmforge.memory` counts as such)."""
    root = getattr(model, "backbone", model)
    tied = _tied_weights(model)
    return [(name, m) for name, m in root.named_modules()
            if type(m) is nn.Linear and not m.weight.requires_grad and id(m.weight) not in tied
            and (m.bias is None or not m.bias.requires_grad)]


def quantize_frozen_base(model: nn.Module) -> list[str]:
    """Turn every frozen, untied `nn.Linear` under `model.backbone` into an Int8Linear, in place.

    Trainable layers (LoRA's A and B, a task head) and anything sharing its weight are left
    alone. Returns the names of the quantized layers.
    """
    root = getattr(model, "backbone", model)
    names = [name for name, _ in frozen_base_linears(model)]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = root.get_submodule(parent) if parent else root
        setattr(owner, child, Int8Linear(getattr(owner, child)))
    # the int8 base is the same on every rank and never changes: DDP need not re-broadcast
    # these buffers before every forward (its default for buffers)
    frozen = [f"{n}.{buf}" for n, m in model.named_modules() if isinstance(m, Int8Linear)
              for buf in ("qweight", "scale")]
    ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, sorted(set(ignored + frozen)))
    return names


def int8_bytes_saved(model: nn.Module) -> int:
    """Bytes the Int8Linear layers of `model` save against their fp32 weights."""
    return sum(m.qweight.numel() * 3 - m.scale.numel() * 4 for m in model.modules()
               if isinstance(m, Int8Linear))
