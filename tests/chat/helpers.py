"""A tiny chat run (random Llama + byte-level BPE + ChatML template) and its transformers twin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

from lmforge.convert import hf_io  # noqa: E402
from lmforge.convert.hf_llama import llama_from_hf  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402
from lmforge.tokenizers import Tokenizer  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ASSETS = Path(__file__).resolve().parents[2] / "lmforge" / "assets" / "tinyshakespeare.txt"


def tokenizer() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    lines = [ln for ln in ASSETS.read_text(encoding="utf-8").splitlines() if ln.strip()][:2000]
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def hf_model(vocab: int, max_len: int = 64, stop_after: int | None = None):
    """A random transformers Llama; with `stop_after`, <|im_end|> (id 2) is rigged to win
    where the otherwise greedy token `stop_after` wins (so replies really end early)."""
    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=max_len, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.rand_like(p) + 0.5 if "norm" in name else torch.randn_like(p) / p.shape[-1] ** 0.5)
        if stop_after is not None:
            model.lm_head.weight[2] = 3 * model.lm_head.weight[stop_after]
    return model


def write_chat_run(out: Path, hf, tok: HFTokenizer, template: str | None = CHATML) -> Path:
    cfg, state = llama_from_hf(hf.config.to_dict(), hf.state_dict())
    cfg.pad_id = 2
    model = build_model(cfg)
    model.load_state_dict(state)
    lm_tok = Tokenizer(tok, "hf", {"bos": None, "eos": "<|im_end|>", "pad": "<|im_end|>",
                                   "unk": None, "cls": None, "sep": None, "mask": None})
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
              "pad_token": "<|im_end|>", "bos_token": None, "unk_token": None,
              "add_bos_token": False, "add_eos_token": False}
    if template is not None:
        config["chat_template"] = template
    out.mkdir(parents=True)
    return hf_io.write_run(out, model, cfg, lm_tok, {"path": "test", "tokenizer_config": config})
