"""Tiny Hugging Face checkpoints built locally for the converter tests (no network).

`transformers` is a test-only reference: every model and tokenizer here is randomly
initialised or trained on a few lines, then written with `save_pretrained`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer  # noqa: E402

# mixed scripts, accents, emoji, CJK, digits and punctuation: where tokenizers disagree first
MIXED_TEXT = "Héllo wörld! naïve café – 你好世界 🤖🚀 Ελληνικά русский 123,45 $5 ok?"
CORPUS = [
    "Hello world, the quick brown fox jumps over the lazy dog.",
    "Héllo wörld: naïve café, crème brûlée and jalapeño.",
    "你好世界 — 机器学习 🤖🚀 emoji text 😀",
    "Ελληνικά και русский текст, numbers 123,45 and $5.",
] * 25

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing may reach the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def quiet() -> None:
    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass


def gpt2_tokenizer():
    """A tiny byte-level BPE tokenizer wrapped as GPT2TokenizerFast."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    return transformers.GPT2TokenizerFast(tokenizer_object=bpe._tokenizer)


def bert_tokenizer():
    """A tiny uncased WordPiece tokenizer wrapped as BertTokenizerFast."""
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, show_progress=False)
    return transformers.BertTokenizerFast(tokenizer_object=wp._tokenizer)


def write_vocab_txt(tokenizer, folder: Path) -> None:
    """vocab.txt (one token per line, id = line number), as the original BERT uploads have."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")


def write_vocab_json_merges(tokenizer, folder: Path) -> None:
    """vocab.json + merges.txt, as the original GPT-2 upload has."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def as_pytorch_bin(folder: Path, model) -> None:
    """Replace model.safetensors by pytorch_model.bin, as save_pretrained(safe_serialization=False)
    wrote it (a plain pickled state dict; tied tensors share storage)."""
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")


def save_gpt2(folder: Path, fmt: str = "safetensors", tokenizer_files: str = "json", **overrides):
    """A random GPT2LMHeadModel + tokenizer in `folder`; returns (model, hf_tokenizer)."""
    quiet()
    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=len(tok), n_positions=48, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, **overrides)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if fmt == "bin":
        as_pytorch_bin(folder, model)
    if tokenizer_files == "vocab":
        write_vocab_json_merges(tok, folder)
        (folder / "tokenizer.json").unlink()
    return model, tok


def save_bert(folder: Path, cls: str = "BertForMaskedLM", fmt: str = "safetensors",
              tokenizer_files: str = "json", **overrides):
    """A random BertForMaskedLM (or BertModel) + tokenizer in `folder`; returns (model, hf_tokenizer)."""
    quiet()
    tok = bert_tokenizer()
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
        pad_token_id=tok.pad_token_id, **overrides)
    model = getattr(transformers, cls)(config).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if fmt == "bin":
        as_pytorch_bin(folder, model)
    if tokenizer_files == "vocab":
        write_vocab_txt(tok, folder)
        (folder / "tokenizer.json").unlink()
    return model, tok


class Payload:
    """A pickle that would create `marker` when unpickled: weights_only must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious_bin(folder: Path, marker: Path) -> None:
    """pytorch_model.bin whose unpickling would run code (open a file for writing)."""
    (folder / "model.safetensors").unlink(missing_ok=True)
    torch.save({"transformer.wte.weight": torch.zeros(2, 2), "payload": Payload(marker)},
               folder / "pytorch_model.bin")
