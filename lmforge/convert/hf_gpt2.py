"""GPT-2 checkpoints (Hugging Face format) in and out of lmforge's GPT.

    lmforge convert from-hf path/to/gpt2 --out runs/gpt2
    lmforge convert to-hf runs/s1 --out hf/s1

GPT-2 is lmforge's GPT with biases, learned positions, tied embeddings, LayerNorm eps 1e-5 and
the tanh-approximated GELU ("gelu_new" -> activation gelu_tanh). Two layout differences:
HF stores attention / MLP weights as `Conv1D` with shape (in, out), the transpose of
`nn.Linear` (listed in TRANSPOSED), and names modules differently (KEY_MAP below).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from . import hf_io

FAMILY = "gpt2"
# Conv1D weights: stored (in, out), nn.Linear wants (out, in)
TRANSPOSED = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"]
# per-layer HF module -> lmforge module inside `backbone.blocks.{i}`
LAYER_MAP = {"ln_1": "ln1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
             "ln_2": "ln2", "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
OPTIONAL: tuple[str, ...] = ()  # every GPT-2 tensor must be in the checkpoint
OPTIONAL_OURS: tuple[str, ...] = ()
# GPT2Config defaults, used for keys an older config.json leaves out
DEFAULTS = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
            "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": 0.1,
            "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}
# options of GPT2Config that lmforge's GPT does not implement: (key, the only value accepted)
UNSUPPORTED = (("add_cross_attention", False), ("scale_attn_by_inverse_layer_idx", False),
               ("scale_attn_weights", True))


def key_map(n_layers: int, tied: bool = True) -> dict[str, str]:
    """HF GPT2LMHeadModel tensor name -> lmforge CausalLM tensor name, one entry per tensor.

    >>> key_map(1)["transformer.h.0.attn.c_attn.weight"]
    'backbone.blocks.0.attn.qkv.weight'
    """
    names = {"transformer.wte.weight": "backbone.embed.weight",
             "transformer.wpe.weight": "backbone.pos.weight.weight"}
    for i in range(n_layers):
        for hf, ours in LAYER_MAP.items():
            for p in ("weight", "bias"):
                names[f"transformer.h.{i}.{hf}.{p}"] = f"backbone.blocks.{i}.{ours}.{p}"
    names["transformer.ln_f.weight"] = "backbone.ln_f.weight"
    names["transformer.ln_f.bias"] = "backbone.ln_f.bias"
    if not tied:  # otherwise lm_head.weight *is* wte
        names["lm_head.weight"] = "lm_head.weight"
    return names


def _transposed(hf_name: str) -> bool:
    return hf_name.endswith(tuple(TRANSPOSED))


# --------------------------------------------------------------------------- config


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """lmforge ModelConfig of a GPT-2 config.json."""
    for key, accepted in UNSUPPORTED:
        if hf.get(key, accepted) != accepted:
            raise ConfigError(f"{source}: {key}={hf[key]!r} is not supported by lmforge's GPT "
                              f"(only {accepted!r})")
    h = {**DEFAULTS, **{k: v for k, v in hf.items() if v is not None or k == "n_inner"}}
    act = h["activation_function"]
    if act not in hf_io.ACTIVATIONS_IN:
        raise ConfigError(f"{source}: activation_function={act!r} is not supported; "
                          f"supported: {', '.join(hf_io.ACTIVATIONS_IN)}")
    d_model = int(h["n_embd"])
    return ModelConfig(
        arch="gpt", head="causal_lm", vocab_size=int(h["vocab_size"]), d_model=d_model,
        n_layers=int(h["n_layer"]), n_heads=int(h["n_head"]),
        d_ff=int(h["n_inner"] or 4 * d_model), max_len=int(h["n_positions"]),
        dropout=float(h["resid_pdrop"]), activation=hf_io.ACTIVATIONS_IN[act],
        norm_eps=float(h["layer_norm_epsilon"]), bias=True, positional="learned",
        tie_embeddings=bool(h["tie_word_embeddings"]))


def config_to_hf(cfg: ModelConfig, tokenizer: Any = None, full_model: bool = True) -> dict[str, Any]:
    """GPT-2 config.json of an lmforge GPT config (positions must be learned)."""
    if cfg.positional != "learned":
        raise ConfigError(f"model.positional={cfg.positional!r}: GPT-2 has learned positions only")
    if cfg.activation not in hf_io.ACTIVATIONS_OUT:
        raise ConfigError(f"model.activation={cfg.activation!r} has no GPT-2 equivalent")
    tied = _tied(cfg)
    bos = eos = None
    if tokenizer is not None:
        eos = tokenizer.eos_id
        bos = tokenizer.bos_id if tokenizer.bos_id is not None else eos
    return {
        "architectures": ["GPT2LMHeadModel" if full_model else "GPT2Model"],
        "model_type": "gpt2", "vocab_size": cfg.vocab_size, "n_positions": cfg.max_len,
        "n_embd": cfg.d_model, "n_layer": cfg.n_layers, "n_head": cfg.n_heads,
        "n_inner": cfg.ff_width, "activation_function": hf_io.ACTIVATIONS_OUT[cfg.activation],
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_eps, "initializer_range": 0.02,
        "scale_attn_weights": True, "tie_word_embeddings": tied, "use_cache": True,
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": cfg.pad_id,
    }


def _tied(cfg: ModelConfig) -> bool:
    # CausalLM ties only when the embedding and output widths agree; for a GPT they always do
    return bool(cfg.tie_embeddings)


# --------------------------------------------------------------------------- tensors


def normalise_keys(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Put every name in GPT2LMHeadModel form and drop what is not a weight.

    GPT2Model checkpoints (the original `gpt2` upload) have no `transformer.` prefix; old ones
    carry the causal-mask buffers `attn.bias` / `attn.masked_bias`; a tied `lm_head.weight`
    is a copy of `wte`.
    """
    out = {}
    for name, tensor in state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if name == "lm_head.weight" and _tied(cfg):
            continue
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name
        out[name] = tensor
    return out


def from_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF GPT-2 tensors (normalised names) -> lmforge CausalLM state dict."""
    out = {}
    for hf, ours in key_map(cfg.n_layers, _tied(cfg)).items():
        if hf in state:
            t = state[hf].float()
            out[ours] = t.t().contiguous() if _transposed(hf) else t
    return out


def to_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmforge CausalLM state dict -> HF GPT2LMHeadModel tensors.

    A run trained with `model.bias=false` has no bias tensors: they are written as zeros,
    which computes exactly the same function.
    """
    out = {}
    for hf, ours in key_map(cfg.n_layers, _tied(cfg)).items():
        if ours in state:
            t = state[ours]
        elif ours.endswith(".bias"):
            t = torch.zeros(state[ours[: -len("bias")] + "weight"].shape[0])
        else:
            raise ConfigError(f"lmforge model has no tensor {ours!r} (needed for {hf!r})")
        out[hf] = t.t().contiguous() if _transposed(hf) else t
    return out


def export_state(model: nn.Module, cfg: ModelConfig, tokenizer: Any) -> tuple[dict, dict]:
    """(config.json dict, HF tensors) of an lmforge GPT model; a GPT under another head
    (a classifier) is exported as its backbone, a GPT2Model."""
    full = cfg.head == "causal_lm"
    if full:
        state = model.state_dict()
    else:
        state = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    hf_state = to_hf_state(state, cfg)
    if not full:  # GPT2Model: no lm_head, no "transformer." prefix
        hf_state = {k[len("transformer."):]: v for k, v in hf_state.items() if k.startswith("transformer.")}
    return config_to_hf(cfg, tokenizer, full), hf_state


def describe_fresh(names: list[str]) -> str:
    """Short description of tensors left at their fresh initialisation."""
    return ", ".join(names[:4])


# --------------------------------------------------------------------------- entry points


def import_gpt2(folder: str | Path) -> tuple[nn.Module, Any, ModelConfig]:
    """(model, tokenizer, config) from a local GPT-2 folder, in memory."""
    model, tokenizer, cfg, _ = hf_io.import_folder(folder, sys.modules[__name__])
    return model, tokenizer, cfg


def from_hf(folder: str | Path, out: str | Path, force: bool = False) -> Path:
    """Convert a local GPT-2 folder into the lmforge run directory `out`."""
    return hf_io.from_hf_folder(folder, out, sys.modules[__name__], force)
