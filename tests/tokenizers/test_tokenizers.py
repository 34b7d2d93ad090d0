"""Tokenizer contract: exact round trips, fixed special ids, word caps, save/load, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tokenizers
import torch

from lmforge.config import ConfigError
from lmforge.tokenizers import (
    ENCODER_SPECIAL_TOKENS,
    SPECIAL_TOKENS,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)

AWKWARD = [
    "",
    "hello world",
    "emoji 😀👍🏽 and a family 👨‍👩‍👧",
    "日本語のテキストと中文",
    "combining e\u0301 a\u0308 and precomposed é",
    "runs of   spaces\n\n\n\ttabs\t\t and trailing   ",
    "windows\r\nline\r\nendings\r\n",
    "  leading spaces",
    "\n",
]
CORPUS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "the cat sat on the mat. The cat ate the rat! the end\n",
] * 3 + AWKWARD


@pytest.fixture(scope="module")
def trained() -> dict[str, Tokenizer]:
    return {
        "char": train_tokenizer("char", CORPUS),
        "word": train_tokenizer("word", CORPUS, vocab_size=200),
        "bpe": train_tokenizer("bpe", CORPUS, vocab_size=400),
        "wordpiece": train_tokenizer("wordpiece", CORPUS, vocab_size=300, lowercase=True),
    }


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("text", AWKWARD)
def test_round_trip_exact(trained, kind, text):
    tok = trained[kind]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_bpe_round_trip_on_text_never_seen(trained):
    # byte-level: any Unicode survives, even scripts absent from training
    text = "Ωμέγα ∑ Ελληνικά — русский текст — 한국어 — 🦀🧪 — \u200b zero width"
    tok = trained["bpe"]
    assert tok.decode(tok.encode(text)) == text
    assert tok.unk_id not in tok.encode(text)


def test_char_ids_and_unknown_characters(trained):
    tok = trained["char"]
    assert tok.vocab_size == len(SPECIAL_TOKENS) + len(set("".join(CORPUS)))
    # characters are sorted after the specials, like nanoGPT's stoi
    assert tok.encode("\t") == [len(SPECIAL_TOKENS)]
    ids = tok.encode("cat€")  # € never seen: documented to become <unk>
    assert ids[-1] == tok.unk_id and len(ids) == 4
    assert tok.decode(ids) == "cat"  # skip_special drops <unk> like Hugging Face
    assert tok.decode(ids, skip_special=False) == "cat<unk>"


def test_char_byte_fallback_round_trips_unseen_text():
    tok = train_tokenizer("char", ["abc"], byte_fallback=True)
    text = "abc € 😀 日本"
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text
    assert tok.encode("€") == [tok.token_to_id(f"<0x{b:02X}>") for b in "€".encode()]
    back = Tokenizer.from_json(tok.to_json())  # the option survives serialisation
    assert back.options["byte_fallback"] and back.decode(back.encode(text)) == text


def test_bpe_known_merge():
    # one text "abababab": the first merge must be (a, b), the first id after 256 bytes + 4 specials
    tok = train_tokenizer("bpe", ["abababab"], vocab_size=256 + 4 + 1)
    assert tok.vocab_size == 261
    assert tok.id_to_token(260) == "ab"
    assert tok.encode("abab") == [260, 260]
    assert tok.encode("ba") == [tok.token_to_id("b"), tok.token_to_id("a")]


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "wordpiece"])
def test_special_token_ids_fixed(trained, kind):
    tok = trained[kind]
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_to_token(i) for i in range(4)] == SPECIAL_TOKENS
    if kind == "wordpiece":
        assert (tok.cls_id, tok.sep_id, tok.mask_id) == (4, 5, 6)
    else:
        assert tok.cls_id is None and tok.mask_id is None
    # encode never adds specials; add_special adds the kind's template
    ids = tok.encode("the cat")
    assert not set(ids) & set(tok.special_ids.values())
    with_special = tok.encode("the cat", add_special=True)
    if kind == "wordpiece":
        assert with_special == [4, *ids, 5]
    else:
        assert with_special == [2, *ids, 3]


def test_encoder_specials_on_request():
    tok = train_tokenizer("bpe", CORPUS, vocab_size=300, encoder_specials=True)
    assert [tok.id_to_token(i) for i in range(7)] == SPECIAL_TOKENS + ENCODER_SPECIAL_TOKENS
    assert (tok.cls_id, tok.sep_id, tok.mask_id) == (4, 5, 6)


def test_word_cap_lowercase_and_unk():
    texts = ["the the the the cat cat cat sat sat on", "The Cat"]
    tok = train_tokenizer("word", texts, vocab_size=4 + 3)
    # most frequent three: the, cat, sat; "on" falls outside the cap
    assert tok.vocab_size == 7
    assert {tok.id_to_token(i) for i in range(4, 7)} == {"the", "cat", "sat"}
    assert tok.encode("on")[0] == tok.unk_id
    assert tok.encode("The")[0] == tok.unk_id  # case-sensitive by default
    lower = train_tokenizer("word", texts, vocab_size=50, lowercase=True)
    assert lower.encode("The CAT") == lower.encode("the cat")
    assert lower.encode("zebra") == [lower.unk_id]


def test_word_splits_punctuation_and_keeps_newlines():
    tok = train_tokenizer("word", ["Hello, world!\nBye (now).\n"], vocab_size=100)
    ids = tok.encode("Hello, world!\nBye (now).")
    assert [tok.id_to_token(i) for i in ids] == ["Hello", ",", "world", "!", "\n", "Bye", "(", "now", ")", "."]
    assert tok.decode(ids) == "Hello, world!\nBye (now)."


def test_wordpiece_continuations(trained):
    tok = trained["wordpiece"]
    pieces = [tok.id_to_token(i) for i in tok.encode("speaking")]
    assert pieces[0] == "speak" and all(p.startswith("##") for p in pieces[1:])
    assert tok.decode(tok.encode("The cat sat.")) == "the cat sat."


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "wordpiece"])
def test_save_load_identical(trained, kind, tmp_path):
    tok = trained[kind]
    path = tok.save(tmp_path / "run")  # a folder path -> run/tokenizer.json
    assert path == tmp_path / "run" / "tokenizer.json"
    back = load_tokenizer(tmp_path / "run")
    assert back.kind == kind
    assert back.fingerprint() == tok.fingerprint()
    assert back.special_ids == tok.special_ids
    text = "the cat sat on the mat, 日本 😀\n"
    assert back.encode(text) == tok.encode(text)
    # the file is a standard tokenizer.json: the Rust library loads it and agrees
    plain = tokenizers.Tokenizer.from_file(str(path))
    assert plain.encode(text, add_special_tokens=False).ids == tok.encode(text)
    assert not list(tmp_path.glob("run/.*.tmp"))  # atomic write leaves no temp file


def test_lmforge_file_loads_in_transformers(trained, tmp_path):
    from transformers import PreTrainedTokenizerFast

    path = trained["bpe"].save(tmp_path / "tok.json")
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path))
    text = "the cat 😀 sat"
    assert hf(text, add_special_tokens=False)["input_ids"] == trained["bpe"].encode(text)


def test_fingerprint_distinguishes(trained):
    fps = {tok.fingerprint() for tok in trained.values()}
    assert len(fps) == len(trained)
    again = train_tokenizer("char", CORPUS)
    assert again.fingerprint() == trained["char"].fingerprint()


def test_decode_accepts_tensors_and_arrays(trained):
    tok = trained["bpe"]
    ids = tok.encode("the cat sat")
    assert tok.decode(torch.tensor(ids)) == "the cat sat"
    assert tok.decode(np.array(ids, dtype=np.uint16)) == "the cat sat"
    batch = tok.encode_batch(["the cat", "sat on"])
    assert batch == [tok.encode("the cat"), tok.encode("sat on")]
    assert tok.decode_batch(torch.tensor([batch[0][:2], batch[1][:2]])) == [
        tok.decode(batch[0][:2]), tok.decode(batch[1][:2])]
    assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == "the cat sat"
    assert tok.decode([tok.bos_id, *ids], skip_special=False) == "<bos>the cat sat"


def test_bad_input_errors(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.kind='sentencepiece'"):
        train_tokenizer("sentencepiece", ["x"])
    with pytest.raises(ConfigError, match="too small for byte-level BPE"):
        train_tokenizer("bpe", ["x"], vocab_size=100)
    with pytest.raises(ConfigError, match="empty"):
        train_tokenizer("char", [])
    with pytest.raises(ConfigError, match="not one string"):
        train_tokenizer("char", "abc")
    with pytest.raises(ConfigError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    with pytest.raises(ConfigError, match="no tokenizer found.*notes.md"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"model": {"type": "Nope"}}))
    with pytest.raises(ConfigError, match="wrong.json"):
        load_tokenizer(tmp_path / "wrong.json")
