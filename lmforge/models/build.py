"""`build_model(config)`: the only way models are constructed.

The backbone families and their capabilities are in `models/registry.py`; the backbone
contract is `models/backbone.py`. A *head* (`lmforge.models.heads`) wraps a backbone and
returns `(logits, loss)`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from ..config import ConfigError, ModelConfig
from .registry import BACKBONES as _SPECS
from .registry import backbone_spec, buildable

# arch -> "module:function" of its builder: a read-only view of the registry for round-1 callers
BACKBONES: dict[str, str] = {name: spec.build for name, spec in _SPECS.items() if spec.build}

# head name -> "module:class"; each class is constructed as Head(backbone, config)
HEADS: dict[str, str] = {
    "causal_lm": "lmforge.models.heads:CausalLM",
    "masked_lm": "lmforge.models.bert:MaskedLM",
    "classifier": "lmforge.models.heads:Classifier",
    "seq2seq": "lmforge.models.seq2seq:build_seq2seq",
    "extractive": "lmforge.models.extractive:build_extractive",
}


def _load(target: str) -> Callable:
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def build_backbone(config: ModelConfig) -> nn.Module:
    """Build the backbone named by `config.arch`."""
    config.validate()
    if config.vocab_size <= 0:
        raise ConfigError("model.vocab_size must be set (it is normally taken from the tokenizer)")
    spec = backbone_spec(config.arch)
    if spec.build is None:
        raise ConfigError(f"model.arch={config.arch!r} is unknown; valid: {', '.join(sorted(buildable()))}")
    return _load(spec.build)(config)


def build_model(config: ModelConfig) -> nn.Module:
    """Build backbone + head as named by `config.arch` and `config.head`."""
    if config.head not in HEADS:
        raise ConfigError(f"model.head={config.head!r} is unknown; valid: {', '.join(sorted(HEADS))}")
    if config.head in ("seq2seq", "extractive"):  # these build their own backbones
        model = _load(HEADS[config.head])(config)
    else:
        model = _load(HEADS[config.head])(build_backbone(config), config)
    if config.extra.get("lora"):  # a LoRA run rebuilds with its adapters (nn/lora.py)
        from ..nn.lora import apply_lora_from_config

        apply_lora_from_config(model)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
