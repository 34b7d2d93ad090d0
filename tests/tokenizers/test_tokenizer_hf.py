"""Hugging Face tokenizers load and give the same ids as `transformers` built from the same files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from lmforge.tokenizers import load_tokenizer

transformers = pytest.importorskip("transformers")

CORPUS = [
    "Hello world, this is a tiny corpus. Héllo café naïve! 日本語 text and more text.",
    "The quick brown fox jumps over the lazy dog 123 456. Speaking, spoken, speaker.",
] * 5
MIXED = "Hello, WORLD! Café naïve 日本語 😀 unknownword 123,456 the lazy-dog.\n\tSpeakers  speak "
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_bert_vocab(folder: Path, lowercase: bool) -> Path:
    """Train a tiny WordPiece vocabulary with `tokenizers` and write it as BERT's vocab.txt."""
    tok = RustTokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=150, special_tokens=BERT_SPECIALS, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    folder.mkdir()
    words = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("".join(w + "\n" for w, _ in words), encoding="utf-8")
    return folder


def write_gpt2_files(folder: Path) -> Path:
    """Train a tiny byte-level BPE and save GPT-2's vocab.json + merges.txt."""
    tok = RustTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    folder.mkdir()
    tok.model.save(str(folder))
    return folder


def test_bert_vocab_txt_matches_transformers(tmp_path):
    folder = write_bert_vocab(tmp_path / "bert", lowercase=True)
    ref = transformers.BertTokenizerFast(vocab=str(folder / "vocab.txt"))  # do_lower_case=True default
    tok = load_tokenizer(folder)
    assert tok.kind == "hf" and tok.options["lowercase"] is True  # inferred: no capitals in vocab
    assert tok.encode(MIXED) == ref(MIXED, add_special_tokens=False)["input_ids"]
    assert tok.encode(MIXED, add_special=True) == ref(MIXED)["input_ids"]
    assert load_tokenizer(folder / "vocab.txt").encode(MIXED) == tok.encode(MIXED)  # the file itself
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.eos_id is None  # BERT has none; the corpus pipeline separates documents with [SEP]
    ids = tok.encode(MIXED, add_special=True)
    assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    # a tokenizer_config.json overrides the guess: cased vocabulary, do_lower_case false
    cased = write_bert_vocab(tmp_path / "cased", lowercase=False)
    (cased / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    ref_cased = transformers.BertTokenizerFast(vocab=str(cased / "vocab.txt"), do_lower_case=False)
    assert load_tokenizer(cased).encode(MIXED) == ref_cased(MIXED, add_special_tokens=False)["input_ids"]


def test_gpt2_vocab_merges_match_transformers(tmp_path):
    folder = write_gpt2_files(tmp_path / "gpt2")
    ref = transformers.GPT2TokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tok = load_tokenizer(folder)
    assert tok.kind == "hf"
    assert tok.encode(MIXED) == ref(MIXED)["input_ids"]
    assert tok.decode(tok.encode(MIXED)) == MIXED  # byte-level: exact
    assert load_tokenizer(folder / "vocab.json").encode(MIXED) == tok.encode(MIXED)
    eot = ref.convert_tokens_to_ids("<|endoftext|>")
    assert tok.eos_id == tok.bos_id == eot
    assert tok.encode("a<|endoftext|>b")[1] == eot  # a special token is matched whole


def test_hf_saved_tokenizer_json_round_trip(tmp_path):
    folder = write_gpt2_files(tmp_path / "gpt2")
    ref = transformers.GPT2TokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    ref.save_pretrained(str(tmp_path / "saved"))  # tokenizer.json + tokenizer_config.json
    tok = load_tokenizer(tmp_path / "saved")
    assert tok.kind == "hf"
    assert tok.encode(MIXED) == ref(MIXED)["input_ids"]
    assert tok.eos_id == ref.eos_token_id
    # re-saved by lmforge, it stays "hf" with the same specials and ids
    back = load_tokenizer(tok.save(tmp_path / "again"))
    assert back.kind == "hf" and back.special_ids == tok.special_ids
    assert back.fingerprint() == tok.fingerprint()


def test_bert_tokenizer_json_from_transformers(tmp_path):
    folder = write_bert_vocab(tmp_path / "bert", lowercase=True)
    ref = transformers.BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    ref.save_pretrained(str(tmp_path / "saved"))
    tok = load_tokenizer(tmp_path / "saved" / "tokenizer.json")
    assert tok.kind == "hf"
    assert tok.encode(MIXED) == ref(MIXED, add_special_tokens=False)["input_ids"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
