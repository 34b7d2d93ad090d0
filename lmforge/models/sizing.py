"""Size a model family to a parameter budget: pick the width that gives about N parameters.

Fair architecture comparisons hold the parameter count fixed; each family then spends it its
own way. `size_for_params` varies `d_model` only (in steps of `n_heads` for Transformers)
and keeps every other field of the base config. A non-zero `d_ff` keeps its ratio to
`d_model`; `d_embed` stays as given. Parameters are counted on models built on PyTorch's
"meta" device, so probing even large widths allocates no memory.

    cfg = size_for_params("lstm", 1_000_000, vocab_size=65)
    cfg.d_model   # -> the width whose LSTM language model has closest to 1M parameters
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from ..config import ConfigError, ModelConfig
from .build import build_model, count_parameters
from .registry import backbone_spec

MAX_WIDTH = 1 << 16  # the search gives up past this d_model
TOLERANCE = 0.5  # a result further than this (relative) from the target is an error


def _width_step(arch: str, base: ModelConfig) -> int:
    # attention families keep n_heads dividing d_model; rotary heads also need an even width
    step = base.n_heads if backbone_spec(arch).needs_heads else 1
    if base.positional == "rotary" and step > 1 and not base.head_dim:
        step *= 2
    return step


def _with_width(base: ModelConfig, d_model: int) -> ModelConfig:
    d_ff = round(base.d_ff * d_model / base.d_model) if base.d_ff else 0
    return dataclasses.replace(base, d_model=d_model, d_ff=max(d_ff, 0))


def params_of(config: ModelConfig) -> int:
    """Parameter count of `build_model(config)`, built on the meta device (no allocation)."""
    quiet = logging.getLogger("lmforge.models")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # builders log their shape (the cnn its receptive field)
    try:
        with torch.device("meta"):
            return count_parameters(build_model(config))
    finally:
        quiet.setLevel(level)


def size_for_params(arch: str, target_params: int, vocab_size: int = 0,
                    base: ModelConfig | None = None) -> ModelConfig:
    """A copy of `base` (default `ModelConfig()`) for `arch` whose d_model gives about
    `target_params` parameters under its head (causal_lm unless `base` says otherwise).

    Binary search on d_model: the count grows monotonically with width.
    """
    if target_params <= 0:
        raise ConfigError(f"parameter budget must be positive, got {target_params}")
    base = dataclasses.replace(base or ModelConfig(), arch=arch)
    if vocab_size:
        base = dataclasses.replace(base, vocab_size=vocab_size)
    step = _width_step(arch, base)

    def count(units: int) -> int:
        return params_of(_with_width(base, units * step))

    lo, hi = 1, 1  # in units of `step`
    while count(hi) < target_params:
        lo, hi = hi, hi * 2
        if hi * step > MAX_WIDTH:
            raise ConfigError(f"arch={arch} cannot reach {target_params:,} parameters with "
                              f"d_model <= {MAX_WIDTH}")
    while lo < hi:  # smallest width with count >= target
        mid = (lo + hi) // 2
        if count(mid) >= target_params:
            hi = mid
        else:
            lo = mid + 1
    best = min({hi, max(hi - 1, 1)}, key=lambda u: abs(count(u) - target_params))
    got = count(best)
    if abs(got - target_params) > TOLERANCE * target_params:
        raise ConfigError(f"arch={arch} cannot come near {target_params:,} parameters: its "
                          f"closest size (d_model={best * step}) has {got:,}")
    return _with_width(base, best * step)
