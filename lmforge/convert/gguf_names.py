"""GGUF <-> Hugging Face names for the Llama family: tensors, metadata, the Q/K row order.

Tables as data (llama.cpp's gguf-py/gguf/tensor_mapping.py and constants.py hold the
originals), so the reader and the writer share one truth:

- tensor names: `blk.N.attn_q.weight` is `model.layers.N.self_attn.q_proj.weight`;
- metadata: `{arch}.embedding_length` is config.json's `hidden_size`, ...;
- llama.cpp's converter reorders the rows of Q and K for the `llama` architecture (its rope
  rotates adjacent pairs (x0, x1), Hugging Face's rotates halves (x0, x_{d/2})); `qwen2` and
  `qwen3` files keep Hugging Face's order. `unpermute_rows` undoes it, `permute_rows` redoes it.
"""

from __future__ import annotations

import re

import numpy as np

# GGUF `general.architecture` -> Hugging Face model_type / class. Mistral ships as "llama"
# (llama.cpp converts it so); transformers tells it apart by "mistral" in general.name.
ARCHITECTURES = {"llama": ("llama", "LlamaForCausalLM"), "mistral": ("mistral", "MistralForCausalLM"),
                 "qwen2": ("qwen2", "Qwen2ForCausalLM"), "qwen3": ("qwen3", "Qwen3ForCausalLM")}
PERMUTED_ARCHS = ("llama", "mistral")  # Q/K rows in llama.cpp's interleaved order

# `{arch}.` metadata key -> config.json key
METADATA = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "attention.key_length": "head_dim",
    "attention.sliding_window": "sliding_window",
    "vocab_size": "vocab_size",
}
REQUIRED = ("embedding_length", "block_count", "feed_forward_length", "attention.head_count")

# GGUF tensor names -> Hugging Face names ({} is the layer index)
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
HF_TO_GGUF_LAYER = {hf: g for g, hf in LAYER_TENSORS.items()}
HF_TO_GGUF_GLOBAL = {hf: g for g, hf in GLOBAL_TENSORS.items()}
ROPE_FREQS = "rope_freqs.weight"  # Llama 3.1's precomputed RoPE scaling factors

_GGUF_LAYER = re.compile(r"blk\.(\d+)\.(.+)")
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor, None when the family has no such tensor.

    >>> hf_name("blk.3.attn_q.weight")
    'model.layers.3.self_attn.q_proj.weight'
    """
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    found = _GGUF_LAYER.fullmatch(gguf_name)
    if found and found.group(2) in LAYER_TENSORS:
        return f"model.layers.{found.group(1)}.{LAYER_TENSORS[found.group(2)]}"
    return None


def gguf_name(hf: str) -> str | None:
    """The GGUF name of a Hugging Face tensor (inverse of `hf_name`)."""
    if hf in HF_TO_GGUF_GLOBAL:
        return HF_TO_GGUF_GLOBAL[hf]
    found = _HF_LAYER.fullmatch(hf)
    if found and found.group(2) in HF_TO_GGUF_LAYER:
        return f"blk.{found.group(1)}.{HF_TO_GGUF_LAYER[found.group(2)]}"
    return None


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's Q/K row order -> Hugging Face's, per head: rows (r0, r1, r2, r3, ...) that
    hold pairs (0, d/2), (1, d/2+1), ... become halves again.

    >>> unpermute_rows(np.arange(4), 1).tolist()   # one head of width 4: pairs (0,2), (1,3)
    [0, 2, 1, 3]
    """
    head = w.shape[0] // n_heads
    return w.reshape(n_heads, head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Hugging Face's Q/K row order -> llama.cpp's (inverse of `unpermute_rows`)."""
    head = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
