"""Write an lmforge Llama-family run as a GGUF file (f32, f16, bf16 or q8_0).

    lmforge convert to-gguf runs/smollm2 --out smol-f16.gguf --type f16

The run is first put in Hugging Face terms (`hf_llama.export_state`, as `to-hf` does), then
each tensor gets its GGUF name, llama.cpp's Q/K row order (llama architecture only) and its
type; `gguf.GGUFWriter` lays out the file and `gguf.quants.quantize` makes the bf16 / q8_0
blocks. The tokenizer (tokenizer.ggml.*), special tokens, BOS/EOS flags and the chat template
go in the metadata, so llama.cpp and transformers' GGUF loader can use the file alone.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from . import gguf_names as names
from .gguf_read import import_gguf
from .gguf_tokenizer import gguf_vocab

# --type -> (tensor type of the big matrices, llama.cpp file type)
TYPES = {"f32": ("F32", 0), "f16": ("F16", 1), "q8_0": ("Q8_0", 7), "bf16": ("BF16", 32)}
# Hugging Face model_type -> GGUF architecture (llama.cpp reads Mistral as llama)
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}


def _encode(values: np.ndarray, kind: str, gguf: Any) -> tuple[np.ndarray, Any]:
    """(data, raw type) of one tensor; norms, biases and rows that are not whole blocks stay
    F32, as llama.cpp's converter keeps them."""
    qtype = gguf.GGMLQuantizationType[kind]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if values.ndim < 2 or kind == "F32" or values.shape[-1] % block:
        return values.astype(np.float32), gguf.GGMLQuantizationType.F32
    if kind == "F16":
        return values.astype(np.float16), qtype
    return gguf.quants.quantize(values.astype(np.float32), qtype), qtype


def _llama3_rope_freqs(scaling: dict[str, Any], theta: float, head_dim: int) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1's RoPE scaling (what llama.cpp stores as rope_freqs)."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    original, factor = scaling["original_max_position_embeddings"], scaling["factor"]
    smooth = np.clip((original / (2 * math.pi / inv) - low) / (high - low), 0.0, 1.0)
    return (1.0 / ((1 - smooth) / factor + smooth)).astype(np.float32)


def _write_model_metadata(writer: Any, hf: dict[str, Any]) -> np.ndarray | None:
    """Architecture keys; returns the rope_freqs tensor when the model needs one."""
    gguf = import_gguf()
    writer.add_context_length(int(hf["max_position_embeddings"]))
    writer.add_embedding_length(int(hf["hidden_size"]))
    writer.add_block_count(int(hf["num_hidden_layers"]))
    writer.add_feed_forward_length(int(hf["intermediate_size"]))
    writer.add_head_count(int(hf["num_attention_heads"]))
    writer.add_head_count_kv(int(hf["num_key_value_heads"]))
    writer.add_rope_freq_base(float(hf["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(hf["rms_norm_eps"]))
    writer.add_vocab_size(int(hf["vocab_size"]))
    head_dim = int(hf["head_dim"])
    writer.add_rope_dimension_count(head_dim)
    if head_dim * int(hf["num_attention_heads"]) != int(hf["hidden_size"]):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if hf.get("sliding_window"):
        writer.add_sliding_window(int(hf["sliding_window"]))
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope.get("rope_type") == "llama3":
        return _llama3_rope_freqs(rope, float(hf["rope_theta"]), head_dim)
    return None


def _write_tokenizer(writer: Any, meta: dict[str, Any]) -> None:
    writer.add_tokenizer_model(meta["tokenizer.ggml.model"])
    if "tokenizer.ggml.pre" in meta:
        writer.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    writer.add_token_list(meta["tokenizer.ggml.tokens"])
    writer.add_token_types(meta["tokenizer.ggml.token_type"])
    if "tokenizer.ggml.merges" in meta:
        writer.add_token_merges(meta["tokenizer.ggml.merges"])
    if "tokenizer.ggml.scores" in meta:
        writer.add_token_scores(meta["tokenizer.ggml.scores"])
        writer.add_add_space_prefix(meta["tokenizer.ggml.add_space_prefix"])
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                     ("unknown_token_id", writer.add_unk_token_id),
                     ("padding_token_id", writer.add_pad_token_id)):
        if f"tokenizer.ggml.{key}" in meta:
            add(int(meta[f"tokenizer.ggml.{key}"]))
    writer.add_add_bos_token(meta["tokenizer.ggml.add_bos_token"])
    writer.add_add_eos_token(meta["tokenizer.ggml.add_eos_token"])
    if "tokenizer.chat_template" in meta:
        writer.add_chat_template(meta["tokenizer.chat_template"])


def run_tokenizer_config(run_dir: Path) -> dict[str, Any]:
    """tokenizer_config.json of a run, with chat_template.jinja folded in when present."""
    path = run_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if (run_dir / "chat_template.jinja").is_file():
        config["chat_template"] = (run_dir / "chat_template.jinja").read_text(encoding="utf-8")
    return config


def to_gguf(run_dir: str | Path, out: str | Path, dtype: str = "f16", force: bool = False) -> Path:
    """Write the llama run `run_dir` as the GGUF file `out` with big matrices in `dtype`."""
    from ..run import load_run
    from .hf_llama import export_state

    gguf = import_gguf()
    run_dir, out = Path(run_dir), Path(out)
    if dtype not in TYPES:
        raise ConfigError(f"--type {dtype!r} is not one of {', '.join(TYPES)}")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; choose another --out or pass --force to overwrite it")
    run = load_run(run_dir, device="cpu")
    cfg = run.model_config
    if cfg.arch != "llama":
        raise ConfigError(f"{run_dir}: model.arch={cfg.arch!r}; only llama-family runs export to "
                          f"GGUF (arch llama)")
    hf, state = export_state(run.model.float(), cfg, run.tokenizer)
    arch = GGUF_ARCH[hf["model_type"]]
    vocab = gguf_vocab(run.tokenizer, run_tokenizer_config(run_dir), int(hf["vocab_size"]))
    kind, file_type = TYPES[dtype]
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        writer.add_name(f"{run_dir.resolve().name} ({hf['model_type']})")  # "mistral" kept in the name
        writer.add_file_type(file_type)
        rope_freqs = _write_model_metadata(writer, hf)
        _write_tokenizer(writer, vocab)
        heads, kv_heads = int(hf["num_attention_heads"]), int(hf["num_key_value_heads"])
        for hf_name, tensor in state.items():
            name = names.gguf_name(hf_name)
            assert name is not None, hf_name  # export_state only yields mapped names
            values = tensor.detach().float().cpu().numpy()
            if arch in names.PERMUTED_ARCHS and ".attn_q." in name:
                values = names.permute_rows(values, heads)
            elif arch in names.PERMUTED_ARCHS and ".attn_k." in name:
                values = names.permute_rows(values, kv_heads)
            data, raw = _encode(values, kind, gguf)
            writer.add_tensor(name, data, raw_dtype=raw)
        if rope_freqs is not None:
            writer.add_tensor(names.ROPE_FREQS, rope_freqs)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
