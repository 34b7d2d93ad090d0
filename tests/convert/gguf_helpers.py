"""Tiny GGUF files written the way llama.cpp's convert_hf_to_gguf.py writes them (test data).

Written with the `gguf` package directly, with the names and the Q/K row order spelled out
here (not taken from lmforge), so the reader is checked against an independent writer; the
tests also load every such file with transformers' GGUF loader, which pins the layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from .hf_helpers import quiet, transformers

gguf = pytest.importorskip("gguf")
from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, vocab_size=320)
FAMILIES = {  # GGUF arch -> (transformers class, config class, extra config)
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(tie_word_embeddings=False, rope_theta=500000.0)),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(head_dim=32, tie_word_embeddings=False)),
    "mistral": ("MistralForCausalLM", "MistralConfig", dict(num_key_value_heads=1, sliding_window=None)),
}
LAYER_NAMES = {  # HF -> llama.cpp, per layer
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias", "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}
LINES = None


def text_lines(n: int = 300) -> list[str]:
    path = Path(__file__).resolve().parents[2] / "lmforge" / "assets" / "tinyshakespeare.txt"
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    extra = ["Héllo wörld! naïve café – 你好世界 🤖🚀 123,45 $5 ok?", "  two  spaces\tand\ttabs\n\n",
             "digits 1234567 and 3.14159", "<|im_start|>user\nhi<|im_end|>"]
    return lines[:n] + extra


def byte_level_tokenizer(pre: str = "smollm") -> HFTokenizer:
    """A small byte-level BPE tokenizer.json with the pre-tokenizer llama.cpp calls `pre`."""
    tok = HFTokenizer(models.BPE())
    if pre == "smollm":  # as SmolLM2's tokenizer.json
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text_lines(2000), trainer)
    return tok


def randomise(model) -> None:
    """Weights far from the tiny default init (non-unit norms, non-zero biases) but scaled by
    1/sqrt(fan-in), so activations stay O(1) and small weight errors stay small."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 1.5 / p.shape[-1] ** 0.5)


def tiny_model(family: str, **overrides):
    quiet()
    cls, config_cls, extra = FAMILIES[family]
    config = getattr(transformers, config_cls)(**{**SMALL, **extra, **overrides})
    model = getattr(transformers, cls)(config).eval()
    randomise(model)
    return model


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf.py LlamaModel.permute: halves -> interleaved pairs, per head
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_kquant_blocks(qtype, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Valid random K-quant blocks (gguf cannot quantize K types in Python): random bits with
    small finite fp16 super-block scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = np.random.default_rng(seed).integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
    if qtype.name == "Q6_K":
        data[..., size - 2:] = scale  # d is the block's last field
    else:
        data[..., 0:2], data[..., 2:4] = scale, scale  # d, dmin
    return data.reshape(rows, -1)


def _encode(name: str, w: np.ndarray, kind: str):
    qtype = gguf.GGMLQuantizationType[kind]
    if w.ndim < 2 or kind == "F32":
        return w.astype(np.float32), gguf.GGMLQuantizationType.F32
    if kind == "F16":
        return w.astype(np.float16), qtype
    if kind in ("Q4_K", "Q5_K", "Q6_K"):
        return random_kquant_blocks(qtype, *w.shape, seed=hash(name) % 1000), qtype
    return gguf.quants.quantize(w.astype(np.float32), qtype), qtype


def write_gguf(path: Path, model, tokenizer: HFTokenizer | None, arch: str = "llama",
               kind: str = "F32", pre: str = "smollm", name: str = "tiny", add_bos: bool = False,
               tensor_kinds: dict[str, str] | None = None, skip_metadata: tuple[str, ...] = ()) -> Path:
    """`model` (a transformers *ForCausalLM) as a GGUF file of `arch`, big matrices in `kind`."""
    cfg = model.config
    gguf_arch = "llama" if arch == "mistral" else arch
    w = gguf.GGUFWriter(str(path), gguf_arch)
    w.add_name(name)
    meta = {"context_length": cfg.max_position_embeddings, "embedding_length": cfg.hidden_size,
            "block_count": cfg.num_hidden_layers, "feed_forward_length": cfg.intermediate_size,
            "attention.head_count": cfg.num_attention_heads,
            "attention.head_count_kv": cfg.num_key_value_heads}
    for key, value in meta.items():
        if key not in skip_metadata:
            w.add_uint32(f"{gguf_arch}.{key}", int(value))
    theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta
    w.add_rope_freq_base(float(theta))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_rope_dimension_count(head_dim)
    if head_dim * cfg.num_attention_heads != cfg.hidden_size:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if tokenizer is not None:
        data = json.loads(tokenizer.to_str())
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        special = {a["content"] for a in data["added_tokens"] if a["special"]}
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types([3 if t in special else 1 for t in tokens])
        w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]])
        w.add_bos_token_id(vocab["<|im_start|>"])
        w.add_eos_token_id(vocab["<|im_end|>"])
        w.add_pad_token_id(vocab["<|im_end|>"])
        w.add_add_bos_token(add_bos)
        w.add_chat_template(CHATML)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    for hf, values in state.items():
        if hf == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if hf in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
            out = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
                   "output_norm.weight", "lm_head.weight": "output.weight"}[hf]
        else:
            _, _, layer, rest = hf.split(".", 3)
            out = f"blk.{layer}.{LAYER_NAMES[rest]}"
        if gguf_arch == "llama" and ".attn_q." in out:
            values = _permute(values, cfg.num_attention_heads)
        elif gguf_arch == "llama" and ".attn_k." in out:
            values = _permute(values, cfg.num_key_value_heads)
        data, raw = _encode(out, values, (tensor_kinds or {}).get(out, kind))
        w.add_tensor(out, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def transformers_gguf_model(path: Path):
    """The same file through transformers' own GGUF loader."""
    quiet()
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
