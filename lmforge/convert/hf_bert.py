"""BERT checkpoints (Hugging Face format) in and out of lmforge's BERT encoder.

    lmforge convert from-hf path/to/bert-base-uncased --out runs/bert
    lmforge convert to-hf runs/bert-mlm --out hf/bert-mlm

The lmforge BERT (`lmforge.models.bert`) is HF's BertModel module for module, except that
query, key and value are one fused projection (`attn.qkv`): import concatenates the three
HF matrices, export splits them (FUSED_QKV). A BertForMaskedLM checkpoint has no pooler and a
BertModel checkpoint no masked-LM head; whichever is absent starts fresh (OPTIONAL) and the
converter says so. Old checkpoints name LayerNorm parameters gamma / beta; they are renamed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..models.bert import TYPE_VOCAB_KEY, type_vocab_size
from . import hf_io

FAMILY = "bert"
EMBED_MAP = {
    "bert.embeddings.word_embeddings.weight": "backbone.embed.weight",
    "bert.embeddings.position_embeddings.weight": "backbone.pos.weight.weight",
    "bert.embeddings.token_type_embeddings.weight": "backbone.token_type.weight",
    "bert.embeddings.LayerNorm.weight": "backbone.ln_embed.weight",
    "bert.embeddings.LayerNorm.bias": "backbone.ln_embed.bias",
}
# per-layer HF module (inside bert.encoder.layer.{i}) -> lmforge module (inside backbone.blocks.{i})
LAYER_MAP = {"attention.output.dense": "attn.proj", "attention.output.LayerNorm": "ln1",
             "intermediate.dense": "mlp.fc", "output.dense": "mlp.proj", "output.LayerNorm": "ln2"}
FUSED_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")  # -> attn.qkv
HEAD_MAP = {
    "bert.pooler.dense.weight": "backbone.pooler.weight",
    "bert.pooler.dense.bias": "backbone.pooler.bias",
    "cls.predictions.transform.dense.weight": "transform.weight",
    "cls.predictions.transform.dense.bias": "transform.bias",
    "cls.predictions.transform.LayerNorm.weight": "norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "norm.bias",
    "cls.predictions.bias": "decoder.bias",
}
OPTIONAL = ("bert.pooler.", "cls.predictions.")  # may be absent: start fresh
OPTIONAL_OURS = ("backbone.pooler.", "transform.", "norm.", "decoder.")  # the same, lmforge names
# task heads lmforge does not import (next-sentence prediction, HF fine-tuned heads):
# fine-tune a fresh lmforge head instead
DROPPED = ("cls.seq_relationship.", "classifier.", "qa_outputs.")
DEFAULTS = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12, "tie_word_embeddings": True, "pad_token_id": 0}
UNSUPPORTED = (("is_decoder", False), ("add_cross_attention", False),
               ("position_embedding_type", "absolute"))


def key_map(n_layers: int, tied: bool = True) -> dict[str, str]:
    """HF BertForMaskedLM tensor name -> lmforge MaskedLM tensor name (one-to-one tensors;
    query/key/value are in `fused_map`).

    >>> key_map(1)["bert.encoder.layer.0.output.LayerNorm.weight"]
    'backbone.blocks.0.ln2.weight'
    """
    names = dict(EMBED_MAP)
    for i in range(n_layers):
        for hf, ours in LAYER_MAP.items():
            for p in ("weight", "bias"):
                names[f"bert.encoder.layer.{i}.{hf}.{p}"] = f"backbone.blocks.{i}.{ours}.{p}"
    names.update(HEAD_MAP)
    if not tied:  # otherwise the decoder weight *is* the word embedding
        names["cls.predictions.decoder.weight"] = "decoder.weight"
    return names


def fused_map(n_layers: int) -> dict[str, list[str]]:
    """lmforge fused tensor -> the HF tensors concatenated into it (query, key, value order).

    >>> fused_map(1)["backbone.blocks.0.attn.qkv.bias"][0]
    'bert.encoder.layer.0.attention.self.query.bias'
    """
    return {f"backbone.blocks.{i}.attn.qkv.{p}": [f"bert.encoder.layer.{i}.{hf}.{p}" for hf in FUSED_QKV]
            for i in range(n_layers) for p in ("weight", "bias")}


# --------------------------------------------------------------------------- config


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """lmforge ModelConfig of a BERT config.json (head: masked_lm)."""
    for key, accepted in UNSUPPORTED:
        if hf.get(key, accepted) not in (accepted, None):
            raise ConfigError(f"{source}: {key}={hf[key]!r} is not supported by lmforge's BERT "
                              f"(only {accepted!r})")
    h = {**DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
    act = h["hidden_act"]
    if act not in hf_io.ACTIVATIONS_IN:
        raise ConfigError(f"{source}: hidden_act={act!r} is not supported; "
                          f"supported: {', '.join(hf_io.ACTIVATIONS_IN)}")
    return ModelConfig(
        arch="bert", head="masked_lm", vocab_size=int(h["vocab_size"]), d_model=int(h["hidden_size"]),
        n_layers=int(h["num_hidden_layers"]), n_heads=int(h["num_attention_heads"]),
        d_ff=int(h["intermediate_size"]), max_len=int(h["max_position_embeddings"]),
        dropout=float(h["hidden_dropout_prob"]), activation=hf_io.ACTIVATIONS_IN[act],
        norm_eps=float(h["layer_norm_eps"]), pad_id=int(h["pad_token_id"]), bias=True,
        positional="learned", tie_embeddings=bool(h["tie_word_embeddings"]), pooling="cls",
        extra={TYPE_VOCAB_KEY: int(h["type_vocab_size"])})


def config_to_hf(cfg: ModelConfig, tokenizer: Any = None, full_model: bool = True) -> dict[str, Any]:
    """BERT config.json of an lmforge BERT config (positions must be learned)."""
    if cfg.positional != "learned":
        raise ConfigError(f"model.positional={cfg.positional!r}: BERT has learned positions only")
    if cfg.activation not in hf_io.ACTIVATIONS_OUT:
        raise ConfigError(f"model.activation={cfg.activation!r} has no BERT equivalent")
    return {
        "architectures": ["BertForMaskedLM" if full_model else "BertModel"],
        "model_type": "bert", "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.ff_width, "hidden_act": hf_io.ACTIVATIONS_OUT[cfg.activation],
        "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
        "max_position_embeddings": cfg.max_len, "type_vocab_size": type_vocab_size(cfg),
        "layer_norm_eps": cfg.norm_eps, "initializer_range": 0.02, "pad_token_id": cfg.pad_id,
        "position_embedding_type": "absolute", "tie_word_embeddings": bool(cfg.tie_embeddings),
    }


# --------------------------------------------------------------------------- tensors


def normalise_keys(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Put every name in BertForMaskedLM form; drop buffers, copies of tied tensors and task
    heads lmforge does not import.

    BertModel checkpoints have no `bert.` prefix; TF-era ones say LayerNorm.gamma / .beta;
    `cls.predictions.decoder.bias` is the same tensor as `cls.predictions.bias`.
    """
    out = {}
    for name, tensor in state.items():
        if name.endswith("LayerNorm.gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name[: -len("beta")] + "bias"
        if name.startswith(DROPPED) or name.endswith("embeddings.position_ids"):
            continue
        if name == "cls.predictions.decoder.weight" and cfg.tie_embeddings:
            continue
        if name == "cls.predictions.decoder.bias":
            if "cls.predictions.bias" in state:
                continue
            name = "cls.predictions.bias"
        if not name.startswith(("bert.", "cls.")):
            name = "bert." + name
        out[name] = tensor
    return out


def from_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF BERT tensors (normalised names) -> lmforge MaskedLM state dict."""
    out = {ours: state[hf].float() for hf, ours in key_map(cfg.n_layers, cfg.tie_embeddings).items()
           if hf in state}
    for ours, parts in fused_map(cfg.n_layers).items():
        out[ours] = torch.cat([state[p].float() for p in parts], dim=0)  # (3D, D) or (3D,)
    return out


def to_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmforge MaskedLM state dict -> HF BertForMaskedLM tensors (absent biases -> zeros)."""

    def get(ours: str) -> torch.Tensor:
        if ours in state:
            return state[ours]
        if ours.endswith(".bias"):  # model.bias=false: the same function with zero biases
            return torch.zeros(state[ours[: -len("bias")] + "weight"].shape[0])
        raise ConfigError(f"lmforge model has no tensor {ours!r}")

    has_head = "decoder.bias" in state  # False when exporting a bare encoder
    out = {hf: get(ours) for hf, ours in key_map(cfg.n_layers, cfg.tie_embeddings).items()
           if has_head or not hf.startswith("cls.")}
    for ours, parts in fused_map(cfg.n_layers).items():
        for hf, chunk in zip(parts, get(ours).chunk(3, dim=0)):
            out[hf] = chunk.contiguous()
    return out


def export_state(model: nn.Module, cfg: ModelConfig, tokenizer: Any) -> tuple[dict, dict]:
    """(config.json dict, HF tensors) of an lmforge BERT model; a BERT under another head (a
    classifier) is exported as its encoder, a BertModel."""
    full = cfg.head == "masked_lm"
    if full:
        state = model.state_dict()
    else:
        state = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    hf_state = to_hf_state(state, cfg)
    if not full:  # BertModel: no "bert." prefix, no masked-LM head
        hf_state = {k[len("bert."):]: v for k, v in hf_state.items() if k.startswith("bert.")}
    return config_to_hf(cfg, tokenizer, full), hf_state


def describe_fresh(names: list[str]) -> str:
    """Which parts start fresh: the pooler and / or the masked-LM head."""
    parts = []
    if any(n.startswith("bert.pooler.") for n in names):
        parts.append("the pooler, absent from BertForMaskedLM checkpoints")
    if any(n.startswith("cls.predictions.") for n in names):
        parts.append("the masked-LM head, absent from BertModel checkpoints")
    return " and ".join(parts) or ", ".join(names[:4])


# --------------------------------------------------------------------------- entry points


def import_bert(folder: str | Path) -> tuple[nn.Module, Any, ModelConfig]:
    """(model, tokenizer, config) from a local BERT folder, in memory."""
    model, tokenizer, cfg, _ = hf_io.import_folder(folder, sys.modules[__name__])
    return model, tokenizer, cfg


def from_hf(folder: str | Path, out: str | Path, force: bool = False) -> Path:
    """Convert a local BERT folder into the lmforge run directory `out`."""
    return hf_io.from_hf_folder(folder, out, sys.modules[__name__], force)
