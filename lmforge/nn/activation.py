"""Activation functions by name: the one place `model.activation` is resolved."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from ..config import ACTIVATIONS, ConfigError

_MODULES: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,  # exact (erf), as BERT and HF "gelu"
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),  # GPT-2's "gelu_new"
    "silu": nn.SiLU,
}


def get_activation(name: str) -> nn.Module:
    """Return a fresh activation module for `name` (sigmoid, tanh, relu, gelu, gelu_tanh, silu)."""
    if name not in _MODULES:
        raise ConfigError(f"model.activation={name!r} is not one of {', '.join(ACTIVATIONS)}")
    return _MODULES[name]()
