"""Read a GGUF file (llama.cpp's format) of the Llama family into Hugging Face terms.

    ckpt = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    ckpt.hf_config      # config.json-style dict (model_type llama / mistral / qwen2 / qwen3)
    ckpt.state          # Hugging Face tensor names -> float32 tensors (dequantized)
    ckpt.tokenizer      # lmforge Tokenizer rebuilt from tokenizer.ggml.*
    ckpt.tokenizer_config   # transformers-style: chat_template, bos/eos/pad/unk, add_bos_token

The `gguf` package (llama.cpp's own gguf-py) parses the file and dequantizes every block
format (gguf.quants.dequantize); this module maps names and metadata and undoes llama.cpp's
Q/K row order. `gguf_convert.from_gguf` turns the result into an lmforge run directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..tokenizers import Tokenizer
from . import gguf_names as names
from .gguf_tokenizer import tokenizer_from_gguf

# tensor types lmforge reads (the float types and llama.cpp's common block quantizations)
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")
# Llama 3.1 / 3.2 RoPE scaling as shipped (low, high frequency factor, original context)
LLAMA3_ROPE = ((1.0, 4.0, 8192),)


def import_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ConfigError("reading GGUF files needs the gguf package: pip install gguf") from None
    return gguf


@dataclass
class GGUFCheckpoint:
    """A GGUF model in Hugging Face terms (see the module docstring)."""

    hf_config: dict[str, Any]
    state: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    tokenizer_config: dict[str, Any]
    general: dict[str, Any] = field(default_factory=dict)  # general.* metadata (name, license...)


def open_gguf(path: str | Path) -> Any:
    """A gguf.GGUFReader over `path`, or one clear error: missing, not GGUF, truncated."""
    gguf = import_gguf()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ConfigError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError, EOFError, UnicodeDecodeError, OverflowError) as err:
        raise ConfigError(f"{path}: truncated or corrupted GGUF file ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:120] if str(err) else 'no detail'})") from None


def read_metadata(reader: Any) -> dict[str, Any]:
    """Every key-value pair of the file as Python values (arrays as lists)."""
    meta = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = fld.contents()
        meta[key] = value.tolist() if isinstance(value, np.ndarray) else value
    return meta


# --------------------------------------------------------------------------- config


def _llama3_rope(freqs: np.ndarray, theta: float, head_dim: int, source: str) -> dict[str, Any]:
    """Recover Llama 3.1's rope_scaling from the per-frequency divisors llama.cpp stores in
    rope_freqs.weight; refuse factors no known recipe produces."""
    factor = float(freqs.max())
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    for low, high, original in LLAMA3_ROPE:
        wavelen = 2 * math.pi / inv
        smooth = np.clip((original / wavelen - low) / (high - low), 0.0, 1.0)
        expected = 1.0 / ((1 - smooth) / factor + smooth)
        if freqs.shape == expected.shape and np.allclose(freqs, expected, rtol=1e-3):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": original}
    raise ConfigError(f"{source}: rope_freqs.weight holds RoPE scaling factors lmforge does not "
                      f"recognise (only Llama 3.1-style llama3 scaling is supported)")


def hf_config_from_metadata(meta: dict[str, Any], tensors: dict[str, Any], source: str) -> dict[str, Any]:
    """config.json of the model a GGUF describes (keys as transformers' Llama/Qwen configs)."""
    arch = str(meta.get("general.architecture", ""))
    if arch not in names.ARCHITECTURES:
        raise ConfigError(f"{source}: architecture {arch or '(none)'!r} is not supported; "
                          f"supported GGUF architectures: {', '.join(names.ARCHITECTURES)}")
    for key in names.REQUIRED:
        if f"{arch}.{key}" not in meta:
            raise ConfigError(f"{source}: metadata key {arch}.{key} is missing")
    model_type, cls = names.ARCHITECTURES[arch]
    if arch == "llama" and "mistral" in str(meta.get("general.name", "")).lower():
        model_type, cls = names.ARCHITECTURES["mistral"]  # as transformers' GGUF loader decides
    config: dict[str, Any] = {"model_type": model_type, "architectures": [cls],
                              "torch_dtype": "float32", "hidden_act": "silu"}
    for key, hf_key in names.METADATA.items():
        if f"{arch}.{key}" in meta:
            config[hf_key] = meta[f"{arch}.{key}"]
    heads = int(config["num_attention_heads"])
    config.setdefault("num_key_value_heads", heads)
    config.setdefault("rms_norm_eps", 1e-6 if arch.startswith("qwen") else 1e-5)
    config.setdefault("rope_theta", 10000.0)
    config.setdefault("max_position_embeddings", 2048)
    if "head_dim" not in config:
        config["head_dim"] = int(meta.get(f"{arch}.rope.dimension_count", 0)) or \
            int(config["hidden_size"]) // heads
    embed = tensors["token_embd.weight"]
    config["vocab_size"] = int(embed.shape[-1])  # rows of the table (ggml: ne[1]), padding included
    config["tie_word_embeddings"] = "output.weight" not in tensors
    if model_type in ("llama", "mistral"):  # Qwen2 always has q/k/v biases, Qwen3 never
        config["attention_bias"] = "blk.0.attn_q.bias" in tensors
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling in ("linear",):
        config["rope_scaling"] = {"rope_type": "linear",
                                  "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    elif scaling not in (None, "none"):
        raise ConfigError(f"{source}: RoPE scaling {scaling!r} is not supported (linear, llama3)")
    if names.ROPE_FREQS in tensors:
        freqs = dequantize(tensors[names.ROPE_FREQS], source)
        config["rope_scaling"] = _llama3_rope(freqs, float(config["rope_theta"]),
                                              int(config["head_dim"]), source)
    if model_type == "mistral":
        config.setdefault("sliding_window", None)
    return config


# --------------------------------------------------------------------------- tensors


def dequantize(tensor: Any, source: str) -> np.ndarray:
    """A GGUF tensor as float32 numpy, shaped as PyTorch reads it ((out, in) for matrices)."""
    gguf = import_gguf()
    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_TYPES:
        raise ConfigError(f"{source}: tensor {tensor.name} has type {kind}, which lmforge does "
                          f"not read (supported: {', '.join(SUPPORTED_TYPES)})")
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # ggml lists dims innermost first
    values = np.ascontiguousarray(values, dtype=np.float32).reshape(shape)
    # float tensors come back as views of the read-only memory map: own a copy
    return values if values.flags.writeable else values.copy()


def read_state(tensors: dict[str, Any], config: dict[str, Any], arch: str,
               source: str) -> dict[str, torch.Tensor]:
    """Hugging Face name -> float32 tensor, Q/K rows back in Hugging Face order."""
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    state = {}
    for name, tensor in tensors.items():
        if name == names.ROPE_FREQS:
            continue  # folded into config["rope_scaling"]
        hf = names.hf_name(name)
        if hf is None:
            raise ConfigError(f"{source}: unexpected tensor {name!r} for architecture {arch!r}")
        values = dequantize(tensor, source)
        if arch in names.PERMUTED_ARCHS and ".attn_q." in name:
            values = names.unpermute_rows(values, heads)
        elif arch in names.PERMUTED_ARCHS and ".attn_k." in name:
            values = names.unpermute_rows(values, kv_heads)
        state[hf] = torch.from_numpy(np.ascontiguousarray(values))  # (out, in)
    return state


def read_gguf(path: str | Path) -> GGUFCheckpoint:
    """The whole checkpoint in Hugging Face terms (see the module docstring)."""
    source = str(path)
    reader = open_gguf(path)
    meta = read_metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ConfigError(f"{source}: no token_embd.weight tensor (not a language model GGUF?)")
    config = hf_config_from_metadata(meta, tensors, source)
    arch = str(meta["general.architecture"])
    state = read_state(tensors, config, arch, source)
    tokenizer, tok_config = tokenizer_from_gguf(meta, source)
    tok_config["model_max_length"] = int(config["max_position_embeddings"])
    for role in ("bos", "eos", "pad"):
        token = tok_config.get(f"{role}_token")
        if token is not None:
            config[f"{role}_token_id"] = tokenizer.token_to_id(token)
    general = {k[len("general."):]: v for k, v in meta.items() if k.startswith("general.")}
    return GGUFCheckpoint(config, state, tokenizer, tok_config, general)
