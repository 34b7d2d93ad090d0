"""Activation functions by name: the one place `model.activation` is resolved."""

from __future__ import annotations

from torch import nn

from ..config import ACTIVATIONS, ConfigError

_MODULES: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def get_activation(name: str) -> nn.Module:
    """Return a fresh activation module for `name` (sigmoid, tanh, relu, gelu, silu)."""
    if name not in _MODULES:
        raise ConfigError(f"model.activation={name!r} is not one of {', '.join(ACTIVATIONS)}")
    return _MODULES[name]()
