"""Llama-family checkpoints (Hugging Face format) in and out of lmforge's Llama backbone.

    lmforge convert from-hf path/to/Qwen2.5-0.5B-Instruct --out runs/qwen
    lmforge convert to-hf runs/qwen --out hf/qwen

Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM (the
safetensors weights, one file or shards listed in model.safetensors.index.json).

For GGUF-CHAT and other importers: `llama_from_hf(hf_config, hf_state)` turns a
transformers-style config dict (config.json content) and an HF-named state dict
(`model.layers.0.self_attn.q_proj.weight`, ...; q/k in HF's half-split rotary layout, i.e.
GGUF's q/k already un-permuted) into `(ModelConfig, state dict of an lmforge CausalLM)`:

    from lmforge.convert.hf_llama import llama_from_hf
    cfg, state = llama_from_hf(config_dict, tensors)       # raises ConfigError on bad input
    model = build_model(cfg); model.load_state_dict(state, strict=False)  # tied head: no lm_head

The tokenizer side: `lmforge.tokenizers.hf.set_bos_eos(tok, add_bos, add_eos)` states the BOS/EOS
rule of a rebuilt tokenizer, and `run_tokenizer_config(tok, chat_template, max_len)` gives the
run's tokenizer_config.json (the keys LLM_GROUP.md lists).

The layouts agree tensor for tensor (lmforge's rotary uses the same half layout), so the
converter is the key map below; nothing is transposed or permuted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..models.llama import ff_width
from . import hf_io

FAMILY = "llama"
# HF model_type -> the class name a config.json of that type lists
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# per-layer HF module -> lmforge module inside `backbone.blocks.{i}`
LAYER_MAP = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn.q",
             "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
             "self_attn.o_proj": "attn.o", "self_attn.q_norm": "attn.q_norm",
             "self_attn.k_norm": "attn.k_norm", "post_attention_layernorm": "mlp_norm",
             "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up", "mlp.down_proj": "mlp.down"}
SAFETENSORS_ONLY = True  # a pickle-only folder is refused: these checkpoints all ship safetensors
OPTIONAL: tuple[str, ...] = ()  # every tensor must be in the checkpoint
OPTIONAL_OURS: tuple[str, ...] = ()
# options lmforge's Llama does not implement: (key, the only value accepted)
UNSUPPORTED = (("attention_bias", False), ("mlp_bias", False))
ROPE_TYPES = ("default", "linear", "llama3")


def key_map(n_layers: int, tied: bool) -> dict[str, str]:
    """HF *ForCausalLM tensor name -> lmforge CausalLM tensor name (weights and biases).

    >>> key_map(1, True)["model.layers.0.self_attn.q_proj.weight"]
    'backbone.blocks.0.attn.q.weight'
    """
    names = {"model.embed_tokens.weight": "backbone.embed.weight",
             "model.norm.weight": "backbone.norm.weight"}
    for i in range(n_layers):
        for hf, ours in LAYER_MAP.items():
            for p in ("weight", "bias"):
                names[f"model.layers.{i}.{hf}.{p}"] = f"backbone.blocks.{i}.{ours}.{p}"
    if not tied:
        names["lm_head.weight"] = "lm_head.weight"
    return names


# --------------------------------------------------------------------------- config


def _rope(hf: dict[str, Any], max_len: int, source: str) -> tuple[float, dict[str, Any]]:
    """(rope_theta, lmforge rope_scaling) from transformers 5's `rope_parameters` or the
    older top-level `rope_theta` + `rope_scaling`."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = hf.get("rope_scaling") or {}
    if not params and isinstance(legacy, dict):
        params = dict(legacy)
    theta = float(params.get("rope_theta") or hf.get("rope_theta") or 10000.0)
    kind = params.get("rope_type", params.get("type", "default")) or "default"
    if kind not in ROPE_TYPES:
        raise ConfigError(f"{source}: rope type {kind!r} is not supported; supported: "
                          f"{', '.join(ROPE_TYPES)}")
    if kind == "default":
        return theta, {}
    scaling: dict[str, Any] = {"type": kind, "factor": float(params.get("factor", 0) or 0)}
    if kind == "llama3":
        scaling.update(low_freq_factor=float(params.get("low_freq_factor", 0) or 0),
                       high_freq_factor=float(params.get("high_freq_factor", 0) or 0),
                       original_max_len=int(params.get("original_max_position_embeddings")
                                            or hf.get("original_max_position_embeddings") or max_len))
    return theta, scaling


def _sliding(hf: dict[str, Any], model_type: str, n_layers: int, source: str) -> tuple[int, int]:
    """(window, first windowed layer). Mistral windows every layer; Qwen from layer
    `max_window_layers` on, and only with `use_sliding_window`."""
    window = hf.get("sliding_window")
    if model_type in ("qwen2", "qwen3") and not hf.get("use_sliding_window", False):
        window = None
    if not window:
        return 0, 0
    types = hf.get("layer_types")
    if model_type == "mistral":
        return int(window), 0
    if not types:
        start = int(hf.get("max_window_layers", n_layers))
        types = ["sliding_attention" if i >= start else "full_attention" for i in range(n_layers)]
    first = next((i for i, t in enumerate(types) if t == "sliding_attention"), n_layers)
    if any(t != "sliding_attention" for t in types[first:]):
        raise ConfigError(f"{source}: layer_types {types} is not supported (lmforge windows every "
                          "layer from one index on)")
    return (int(window), first) if first < n_layers else (0, 0)


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """lmforge ModelConfig (arch llama) of a Llama / Mistral / Qwen2 / Qwen3 config.json."""
    model_type = str(hf.get("model_type", ""))
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"{source}: model_type={model_type!r} is not a Llama-family model; "
                          f"supported: {', '.join(ARCHITECTURES.values())}")
    for key, accepted in UNSUPPORTED:
        if hf.get(key, accepted) not in (accepted, None):
            raise ConfigError(f"{source}: {key}={hf[key]!r} is not supported by lmforge's llama "
                              f"(only {accepted!r})")
    act = hf.get("hidden_act", "silu")
    if hf_io.ACTIVATIONS_IN.get(act) is None:
        raise ConfigError(f"{source}: hidden_act={act!r} is not supported; supported: "
                          f"{', '.join(hf_io.ACTIVATIONS_IN)}")
    try:
        d_model, n_heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        n_layers, max_len = int(hf["num_hidden_layers"]), int(hf.get("max_position_embeddings", 2048))
        vocab, d_ff = int(hf["vocab_size"]), int(hf["intermediate_size"])
    except KeyError as err:
        raise ConfigError(f"{source}: missing {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: a size is not an integer ({err})") from None
    head_dim = int(hf.get("head_dim") or d_model // n_heads)
    theta, scaling = _rope(hf, max_len, source)
    window, window_start = _sliding(hf, model_type, n_layers, source)
    cfg = ModelConfig(
        arch="llama", head="causal_lm", vocab_size=vocab, d_model=d_model, n_layers=n_layers,
        n_heads=n_heads, n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        head_dim=0 if head_dim * n_heads == d_model else head_dim, d_ff=d_ff, max_len=max_len,
        activation=hf_io.ACTIVATIONS_IN[act], norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        bias=False, positional="rotary", tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        rope_theta=theta, rope_scaling=scaling, qkv_bias=model_type == "qwen2",
        qk_norm=model_type == "qwen3", sliding_window=window, sliding_window_start=window_start)
    try:
        cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def config_to_hf(cfg: ModelConfig, tokenizer: Any = None) -> dict[str, Any]:
    """config.json (transformers 5 layout) of an lmforge llama config. The HF class follows
    the features used: q/k norm -> Qwen3, q/k/v bias -> Qwen2, a window on every layer ->
    Mistral, otherwise Llama."""
    if cfg.qk_norm and cfg.qkv_bias:
        raise ConfigError("model.qk_norm with model.qkv_bias has no Hugging Face counterpart")
    if cfg.qk_norm:
        model_type = "qwen3"
    elif cfg.qkv_bias:
        model_type = "qwen2"
    elif cfg.sliding_window:
        model_type = "mistral" if cfg.sliding_window_start == 0 else "qwen2"
    else:
        model_type = "llama"
    if model_type == "qwen2" and not cfg.qkv_bias:
        raise ConfigError("a sliding window from a later layer on needs q/k/v biases (Qwen2) "
                          "to have a Hugging Face counterpart")
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        s = cfg.rope_scaling
        rope.update(rope_type=s["type"], factor=s["factor"])
        if s["type"] == "llama3":
            rope.update(low_freq_factor=s["low_freq_factor"], high_freq_factor=s["high_freq_factor"],
                        original_max_position_embeddings=s["original_max_len"])
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURES[model_type]], "model_type": model_type,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": ff_width(cfg),
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.attn_head_dim,
        "hidden_act": hf_io.ACTIVATIONS_OUT[cfg.activation],
        "max_position_embeddings": cfg.max_len, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": bool(cfg.tie_embeddings), "rope_parameters": rope,
        "rope_theta": cfg.rope_theta, "attention_dropout": cfg.dropout,
        "initializer_range": 0.02, "use_cache": True, "pad_token_id": cfg.pad_id,
        "bos_token_id": getattr(tokenizer, "bos_id", None), "eos_token_id": getattr(tokenizer, "eos_id", None),
    }
    if cfg.rope_scaling:  # the transformers 4 spelling too (5 reads either)
        out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if model_type == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    if model_type == "mistral":
        out["sliding_window"] = cfg.sliding_window
    if model_type in ("qwen2", "qwen3"):
        windowed = cfg.sliding_window > 0
        out.update(use_sliding_window=windowed, sliding_window=cfg.sliding_window or None,
                   max_window_layers=cfg.sliding_window_start if windowed else cfg.n_layers,
                   layer_types=["sliding_attention" if windowed and i >= cfg.sliding_window_start
                                else "full_attention" for i in range(cfg.n_layers)])
    if model_type == "qwen3":
        out["attention_bias"] = False
    return out


# --------------------------------------------------------------------------- tensors


def normalise_keys(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Drop what is not a weight (old checkpoints keep rotary `inv_freq` buffers) and a
    tied `lm_head.weight` (a copy of the embedding)."""
    return {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")
            and not (k == "lm_head.weight" and cfg.tie_embeddings)}


def from_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF tensors (normalised names) -> lmforge CausalLM state dict, in float32."""
    return {ours: state[hf].float() for hf, ours in key_map(cfg.n_layers, cfg.tie_embeddings).items()
            if hf in state}


def to_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmforge CausalLM state dict -> HF *ForCausalLM tensors (only those the model has)."""
    return {hf: state[ours] for hf, ours in key_map(cfg.n_layers, cfg.tie_embeddings).items()
            if ours in state}


def llama_from_hf(hf_config: dict[str, Any], hf_state: dict[str, torch.Tensor],
                  source: str = "config.json") -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(ModelConfig, lmforge CausalLM state dict) from a config.json dict and HF-named tensors.

    Every tensor is checked against the config (a missing, extra or misshapen one raises
    naming it); the state dict loads into `build_model(cfg)` with nothing left unset.
    """
    from ..models.build import build_model

    cfg = config_from_hf(hf_config, source)
    state = normalise_keys(hf_state, cfg)
    with torch.device("meta"):  # shapes only: no memory for the reference model
        expected = to_hf_state(build_model(cfg).state_dict(), cfg)
    hf_io.check_tensors(state, expected, Path(source))
    return cfg, from_hf_state(state, cfg)


def export_state(model: nn.Module, cfg: ModelConfig, tokenizer: Any) -> tuple[dict, dict]:
    """(config.json dict, HF tensors) of an lmforge llama CausalLM."""
    if cfg.head != "causal_lm":
        raise ConfigError(f"model.head={cfg.head!r}: only a llama language model (causal_lm) "
                          "exports to Hugging Face")
    return config_to_hf(cfg, tokenizer), to_hf_state(model.state_dict(), cfg)


def describe_fresh(names: list[str]) -> str:
    return ", ".join(names[:4])


# --------------------------------------------------------------------------- entry points


def import_llama(folder: str | Path) -> tuple[nn.Module, Any, ModelConfig]:
    """(model, tokenizer, config) from a local Llama-family folder, in memory."""
    model, tokenizer, cfg, _ = hf_io.import_folder(folder, sys.modules[__name__])
    return model, tokenizer, cfg
