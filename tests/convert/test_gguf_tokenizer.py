"""Tokenizers rebuilt from GGUF metadata give the ids of the tokenizer the file was made
from: byte-level BPE under each pre-tokenizer name, and SentencePiece-style BPE (scores, byte
fallback) against transformers' own GGUF tokenizer."""

from __future__ import annotations

import pytest

from .gguf_helpers import gguf, text_lines, transformers

from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

from lmforge.convert.gguf_read import open_gguf, read_metadata  # noqa: E402
from lmforge.convert.gguf_tokenizer import PRE_TOKENIZERS, gguf_vocab, tokenizer_from_gguf  # noqa: E402
from lmforge.tokenizers import Tokenizer  # noqa: E402


def _write(path, meta: dict) -> None:
    """A GGUF holding only tokenizer metadata (llama.cpp key names and types)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(meta["tokenizer.ggml.model"])
    if "tokenizer.ggml.pre" in meta:
        w.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    w.add_token_list(meta["tokenizer.ggml.tokens"])
    w.add_token_types(meta["tokenizer.ggml.token_type"])
    if "tokenizer.ggml.merges" in meta:
        w.add_token_merges(meta["tokenizer.ggml.merges"])
    if "tokenizer.ggml.scores" in meta:
        w.add_token_scores(meta["tokenizer.ggml.scores"])
        w.add_add_space_prefix(True)
    for key in ("bos_token_id", "eos_token_id", "unknown_token_id"):
        if f"tokenizer.ggml.{key}" in meta:
            w.add_uint32(f"tokenizer.ggml.{key}", meta[f"tokenizer.ggml.{key}"])
    w.add_add_bos_token(meta["tokenizer.ggml.add_bos_token"])
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702


def _train(pre) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text_lines(2000), trainer)
    return tok


@pytest.mark.parametrize("pre", list(PRE_TOKENIZERS))
def test_byte_level_round_trip_through_gguf(tmp_path, pre):
    original = _train(PRE_TOKENIZERS[pre]())
    config = {"eos_token": "<|im_end|>", "bos_token": "<|endoftext|>", "add_bos_token": False}
    meta = gguf_vocab(Tokenizer(original, "hf"), config)
    assert meta["tokenizer.ggml.pre"] == pre  # the writer names the splitter llama.cpp's way
    _write(tmp_path / "t.gguf", meta)
    tok, tok_config = tokenizer_from_gguf(read_metadata(open_gguf(tmp_path / "t.gguf")), "t.gguf")
    lines = text_lines(300)
    expected = [e.ids for e in original.encode_batch(lines)]
    if pre == "qwen2":  # Qwen2's own tokenizer.json NFC-normalises first; the sample is NFC already
        assert all(__import__("unicodedata").is_normalized("NFC", ln) for ln in lines)
    assert tok.encode_batch(lines) == expected
    assert tok.decode_batch(expected, skip_special=False) == lines
    assert (tok_config["eos_token"], tok.eos_id) == ("<|im_end|>", original.token_to_id("<|im_end|>"))


def _sentencepiece_vocab() -> tuple[list[str], list[float], list[int]]:
    """A Llama-2-style scored vocabulary: <unk>, <s>, </s>, 256 byte tokens, then pieces
    (learned with a Metaspace BPE) scored by merge order."""
    bpe = HFTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    bpe.train_from_iterator(text_lines(2000), trainers.BpeTrainer(vocab_size=500, show_progress=False))
    pieces = [t for t, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    scores = [0.0] * 259 + [float(-i) for i in range(len(pieces))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    return tokens, scores, types


def test_sentencepiece_vocabulary_matches_transformers_gguf_tokenizer(tmp_path):
    tokens, scores, types = _sentencepiece_vocab()
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True}
    _write(tmp_path / "spm.gguf", meta)
    tok, config = tokenizer_from_gguf(read_metadata(open_gguf(tmp_path / "spm.gguf")), "spm.gguf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    lines = text_lines(300)
    assert [hf_tok(ln)["input_ids"] for ln in lines] == [tok.encode(ln, add_special=True) for ln in lines]
    assert config["add_bos_token"] is True and tok.encode("a", add_special=True)[0] == 1
    # byte fallback: characters outside the pieces become <0x..> tokens and decode back
    ids = tok.encode("Straße 🎉")
    assert tok.id_to_token(ids[-1]).startswith("<0x") and tok.decode(ids) == "Straße 🎉"
    assert [tok.decode(hf_tok(ln)["input_ids"]) for ln in lines[:50]] == \
        [hf_tok.decode(hf_tok(ln)["input_ids"], skip_special_tokens=True) for ln in lines[:50]]
