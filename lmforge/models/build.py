"""Name -> builder registry. `build_model(config)` is the only way models are constructed.

A *backbone* maps token ids to hidden states and follows one contract:

    backbone = build_backbone(cfg)                 # nn.Module
    hidden, state = backbone(ids, mask=None, state=None)
        ids    (B, T) int64
        mask   (B, T) bool, True at real tokens (None = no padding)
        hidden (B, T, backbone.out_dim)
        state  whatever lets the next call continue the sequence: the KV cache of a
               Transformer decoder, (h, c) of an LSTM, the conv window of a CNN;
               None in, fresh state out.

Every backbone has the attributes
    causal:  bool           True when position t sees only positions <= t
    out_dim: int            width of `hidden`
    embed:   nn.Embedding   the token embedding (tied heads, GloVe loading)

A *head* (`lmforge.models.heads`) wraps a backbone and returns `(logits, loss)`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from ..config import ConfigError, ModelConfig

# arch name -> "module:function" building the backbone from a ModelConfig. Imported lazily so a
# family's dependencies load only when used.
BACKBONES: dict[str, str] = {
    "gpt": "lmforge.models.gpt:build_gpt",
    "bigram": "lmforge.models.baselines:build_bigram",
    "mlp": "lmforge.models.baselines:build_mlp",
    "rnn": "lmforge.models.rnn:build_rnn",
    "lstm": "lmforge.models.rnn:build_lstm",
    "gru": "lmforge.models.rnn:build_gru",
    "cnn": "lmforge.models.cnn:build_cnn",
    "rcnn": "lmforge.models.rcnn:build_rcnn",
    "bert": "lmforge.models.bert:build_bert",
    "llama": "lmforge.models.llama:build_llama",
}

# head name -> "module:class"; each class is constructed as Head(backbone, config)
HEADS: dict[str, str] = {
    "causal_lm": "lmforge.models.heads:CausalLM",
    "masked_lm": "lmforge.models.bert:MaskedLM",
    "classifier": "lmforge.models.heads:Classifier",
    "seq2seq": "lmforge.models.seq2seq:build_seq2seq",
}


def _resolve(table: dict[str, str], name: str, what: str) -> Callable:
    if name not in table:
        raise ConfigError(f"model.{what}={name!r} is unknown; valid: {', '.join(sorted(table))}")
    module_name, attr = table[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def build_backbone(config: ModelConfig) -> nn.Module:
    """Build the backbone named by `config.arch`."""
    config.validate()
    if config.vocab_size <= 0:
        raise ConfigError("model.vocab_size must be set (it is normally taken from the tokenizer)")
    return _resolve(BACKBONES, config.arch, "arch")(config)


def build_model(config: ModelConfig) -> nn.Module:
    """Build backbone + head as named by `config.arch` and `config.head`."""
    if config.head == "seq2seq":  # an encoder-decoder builds its own two backbones
        model = _resolve(HEADS, "seq2seq", "head")(config)
    else:
        model = _resolve(HEADS, config.head, "head")(build_backbone(config), config)
    if config.extra.get("lora"):  # a LoRA run rebuilds with its adapters (nn/lora.py)
        from ..nn.lora import apply_lora_from_config

        apply_lora_from_config(model)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
