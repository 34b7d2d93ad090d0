"""The backbone registry: every family declares its capabilities here, once.

Adding a backbone is one model file (`models/<name>.py` with a `build_<name>(config)`) plus
one `register(BackboneSpec(...))` line below. Everything that depends on a family's nature
asks this table instead of keeping its own list of names:

    config.py        default activation; `needs_heads` -> n_heads must divide d_model
    models/build.py  the builder (imported lazily, so a family's dependencies load on use)
    models/sizing.py `needs_heads` -> widths move in steps of n_heads
    tasks/classify   `positional` -> max_len is bounded by the base model's positions
    compare.py       `arena` recipe and `recurrent` (truncated BPTT across windows)

This module imports nothing from lmforge but `errors`, so the config layer can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    """What lmforge needs to know about a backbone family before building it."""

    name: str  # the `model.arch` value
    build: str | None  # "module:function" taking a ModelConfig; None: encoder-decoder only
    needs_heads: bool = False  # multi-head attention: n_heads must divide d_model
    positional: bool = False  # learned/rotary positions: sequences are bounded by max_len
    recurrent: bool = False  # carries a state across windows (truncated BPTT)
    activation: str = "gelu"  # the family's textbook non-linearity (model.activation "")
    # model fields the family fixes (written into model_config.json so the file says so)
    fixed: dict[str, Any] = field(default_factory=dict, compare=False)
    # grouped-query attention and rotary heads: n_kv_heads, head_dim, rope_* are validated
    gqa: bool = False
    # the arena recipe (compare.py): {"model": {...}, "train": {...}}; None = not in the arena
    arena: dict[str, dict[str, Any]] | None = field(default=None, compare=False)


BACKBONES: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone family; a name is registered once."""
    if spec.name in BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is registered twice")
    BACKBONES[spec.name] = spec
    return spec


def backbone_spec(arch: str) -> BackboneSpec:
    """The spec of `arch`, or a ConfigError listing the buildable ones."""
    spec = BACKBONES.get(arch)
    if spec is None:
        raise ConfigError(f"model.arch={arch!r} is unknown; valid: {', '.join(sorted(buildable()))}")
    return spec


def known(arch: str) -> BackboneSpec | None:
    """The spec of `arch`, None when no family has that name."""
    return BACKBONES.get(arch)


def buildable() -> list[str]:
    """Families that build a stand-alone backbone (every one but encoder-decoder-only arches)."""
    return [name for name, spec in BACKBONES.items() if spec.build]


def arena_archs() -> list[str]:
    """Families that take part in `lmforge compare`, in registry order."""
    return [name for name, spec in BACKBONES.items() if spec.arena is not None]


# The recurrent nets keep tanh (it keeps torch's fused RNN kernel). Arena recipes are each
# family's own at ~0.1-10M parameters; the rates come from a sweep on Tiny Shakespeare at
# 1M parameters and 60 s per run (docs/arena.md): the best measured there or one step below.
# A table lookup has nothing to destabilise: a high rate converges within the budget.
register(BackboneSpec("bigram", "lmforge.models.baselines:build_bigram",
                      arena={"model": {}, "train": {"lr": 3e-2, "weight_decay": 0.0}}))
# Bengio et al. 2003: 16-token window, 64-wide embeddings, two tanh layers
register(BackboneSpec("mlp", "lmforge.models.baselines:build_mlp", activation="tanh",
                      arena={"model": {"extra": {"context": 16}, "d_embed": 64, "n_layers": 2,
                                       "activation": "tanh"}, "train": {"lr": 5e-3}}))
# Elman RNN, tanh (the fused kernel); gradient clipping at 1.0 keeps it stable
register(BackboneSpec("rnn", "lmforge.models.rnn:build_rnn", recurrent=True, activation="tanh",
                      arena={"model": {"n_layers": 2, "activation": "tanh"}, "train": {"lr": 3e-3}}))
register(BackboneSpec("lstm", "lmforge.models.rnn:build_lstm", recurrent=True,
                      arena={"model": {"n_layers": 2}, "train": {"lr": 5e-3}}))
register(BackboneSpec("gru", "lmforge.models.rnn:build_gru", recurrent=True,
                      arena={"model": {"n_layers": 2}, "train": {"lr": 5e-3}}))
# WaveNet/ByteNet stack, dilations 1..32: a 127-token receptive field
register(BackboneSpec("cnn", "lmforge.models.cnn:build_cnn",
                      arena={"model": {"n_layers": 6, "kernel_size": 3, "activation": "gelu"},
                             "train": {"lr": 3e-3}}))
# Lai et al. 2015, causal: LSTM left context + tanh projection
register(BackboneSpec("rcnn", "lmforge.models.rcnn:build_rcnn", recurrent=True, activation="tanh",
                      arena={"model": {"n_layers": 1, "cell": "lstm", "activation": "tanh"},
                             "train": {"lr": 5e-3}}))
# a small pre-LayerNorm decoder
register(BackboneSpec("gpt", "lmforge.models.gpt:build_gpt", needs_heads=True, positional=True,
                      arena={"model": {"n_layers": 4, "n_heads": 4, "activation": "gelu"},
                             "train": {"lr": 3e-3}}))
# Llama family (Llama, Mistral, Qwen2/3, SmolLM): RMSNorm, SwiGLU, rotary, grouped-query
# attention; the arena recipe is the gpt's (its rate not swept yet)
register(BackboneSpec("llama", "lmforge.models.llama:build_llama", needs_heads=True,
                      positional=True, activation="silu", gqa=True,
                      fixed={"bias": False, "positional": "rotary"},
                      arena={"model": {"n_layers": 4, "n_heads": 4, "n_kv_heads": 2},
                             "train": {"lr": 3e-3}}))
register(BackboneSpec("bert", "lmforge.models.bert:build_bert", needs_heads=True, positional=True))
# the encoder-decoder Transformer of model.head=seq2seq (models/seq2seq.py builds both halves)
register(BackboneSpec("transformer", None, needs_heads=True, positional=True))
