"""A tiny causal-LM base run made on the fly for the SFT / DPO tests (no hub, no big files)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.config import ModelConfig
from lmforge.models.build import build_model
from lmforge.tokenizers import train_tokenizer
from lmforge.train.checkpoint import WEIGHTS, save_weights

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?'\"<>|_\n-+=/()[]{}"


def make_base(folder: Path, arch: str = "gpt", template: str | None = None, seed: int = 0,
              max_len: int = 96) -> Path:
    """A random tiny GPT (or llama) with a char tokenizer covering ChatML; `template` goes to
    tokenizer_config.json (None: no tokenizer_config, so ChatML with a warning)."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer("char", [ALPHABET])
    tok.save(folder / "tokenizer.json")
    cfg = ModelConfig(arch=arch, vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2,
                      max_len=max_len, pad_id=tok.pad_id or 0, **_llama_fields(arch))
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # a frozen tied head needs embeddings large enough for confident logits
        model.backbone.embed.weight.normal_(std=1.0)
    save_weights(model, folder / WEIGHTS)
    (folder / "model_config.json").write_text(cfg.to_json(), encoding="utf-8")
    if template is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"chat_template": template, "eos_token": "<eos>", "bos_token": "<bos>",
             "add_bos_token": False}), encoding="utf-8")
    return folder


def _llama_fields(arch: str) -> dict:
    if arch != "llama":
        return {}
    return {"n_kv_heads": 1}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def toy_chats(n: int, seed: int = 0) -> list[dict]:
    """A learnable instruction set: the assistant repeats the user's word in capitals."""
    import random

    rng = random.Random(seed)
    words = ["cat", "dog", "sun", "sky", "red", "owl", "map", "pen"]
    rows = []
    for _ in range(n):
        w = rng.choice(words)
        rows.append({"messages": [{"role": "user", "content": f"say {w}"},
                                  {"role": "assistant", "content": w.upper()}]})
    return rows
