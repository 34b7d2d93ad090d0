"""GGUF import: tiny files of every supported architecture and tensor type, written the way
llama.cpp writes them, give the same logits in lmforge as in the model they were written
from and as through transformers' own GGUF loader; the tokenizer comes back equal."""

from __future__ import annotations

import pytest
import torch

from .gguf_helpers import (FAMILIES, byte_level_tokenizer, text_lines, tiny_model,
                           transformers_gguf_model, write_gguf)

from lmforge.convert.gguf_convert import from_gguf, import_gguf  # noqa: E402
from lmforge.run import load_run  # noqa: E402

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer("smollm")


def _ids(T: int = 20) -> torch.Tensor:
    return torch.randint(3, 320, (2, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_each_architecture_imports_with_equal_logits(tmp_path, tokenizer, arch):
    hf = tiny_model(arch)
    path = write_gguf(tmp_path / f"{arch}.gguf", hf, tokenizer, arch=arch, name=f"tiny-{arch}")
    run = load_run(from_gguf(path, tmp_path / "run"), device="cpu")
    cfg = run.model_config
    assert (cfg.qkv_bias, cfg.qk_norm, cfg.n_kv_heads) == \
        (arch == "qwen2", arch == "qwen3", hf.config.num_key_value_heads)
    assert cfg.tie_embeddings == hf.config.tie_word_embeddings
    ids = _ids()
    with torch.no_grad():
        ours, expected = run.model(ids)[0], hf(ids).logits
    assert (ours - expected).abs().max().item() <= ATOL
    if arch != "qwen3":  # transformers' GGUF loader ignores qwen3.attention.key_length (head_dim)
        with torch.no_grad():
            via_transformers = transformers_gguf_model(path)(ids).logits
        assert (via_transformers - expected).abs().max().item() <= ATOL  # llama.cpp's layout


@pytest.mark.parametrize("kind", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"])
def test_tensor_types_dequantize_as_transformers(tmp_path, tokenizer, kind):
    # K-quants work on rows of 256: a model 256 wide (vocab rows are 256 wide too)
    hf = tiny_model("llama", hidden_size=256, intermediate_size=256, num_attention_heads=4,
                    num_key_value_heads=2)
    path = write_gguf(tmp_path / "m.gguf", hf, tokenizer, kind=kind)
    model, _, _, _ = import_gguf(path)
    ids = _ids()
    with torch.no_grad():
        ours, reference = model(ids)[0], transformers_gguf_model(path)(ids).logits
    scale = reference.abs().max().item()
    assert (ours - reference).abs().max().item() <= 1e-4 * max(1.0, scale)
    if kind in ("F16", "BF16", "Q8_0"):  # close to the float model it was made from
        with torch.no_grad():
            err = (ours - hf(ids).logits).abs().max().item()
        assert err <= {"F16": 0.005, "BF16": 0.05, "Q8_0": 0.1}[kind] * scale


def test_tokenizer_ids_equal_the_original_on_hundreds_of_lines(tmp_path, tokenizer):
    hf = tiny_model("qwen2")
    path = write_gguf(tmp_path / "m.gguf", hf, tokenizer, arch="qwen2")
    _, tok, _, info = import_gguf(path)
    lines = text_lines(300)
    assert len(lines) > 300
    assert tok.encode_batch(lines) == [e.ids for e in tokenizer.encode_batch(lines)]
    assert tok.decode(tok.encode(lines[-4])) == lines[-4]
    config = info["tokenizer_config"]
    assert (config["bos_token"], config["eos_token"], config["add_bos_token"]) == \
        ("<|im_start|>", "<|im_end|>", False)
    assert "<|im_start|>" in config["chat_template"]
    # control tokens stay whole inside text
    assert tok.encode("a<|im_end|>b") == [tok.encode("a")[0], tok.token_to_id("<|im_end|>"),
                                           tok.encode("b")[0]]


def test_add_bos_gives_prompts_a_bos(tmp_path, tokenizer):
    path = write_gguf(tmp_path / "m.gguf", tiny_model("llama"), tokenizer, add_bos=True)
    _, tok, _, info = import_gguf(path)
    assert info["tokenizer_config"]["add_bos_token"] is True
    assert tok.encode("hello", add_special=True) == [tok.bos_id] + tok.encode("hello")


def test_transformers_tokenizer_from_the_same_file_agrees(tmp_path, tokenizer):
    # transformers' GGUF tokenizer has no `smollm` splitter (it groups digits): compare on text
    # without digits, where the two must agree
    path = write_gguf(tmp_path / "m.gguf", tiny_model("llama"), tokenizer)
    _, tok, _, _ = import_gguf(path)
    hf_tok = __import__("transformers").AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    lines = [ln for ln in text_lines(300) if not any(c.isdigit() for c in ln)]
    assert [hf_tok(ln, add_special_tokens=False)["input_ids"] for ln in lines] == tok.encode_batch(lines)
