"""Corpus pipeline: file discovery, streamed reading, JSONL, UTF-8 errors, token cache, splits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lmforge.config import ConfigError
from lmforge.data import corpus as corpus_mod
from lmforge.data.corpus import (
    BUNDLED_CORPUS,
    corpus_texts_for_training,
    iter_documents,
    resolve_corpus_files,
    tokenize_corpus,
)
from lmforge.tokenizers import train_tokenizer
from lmforge.tokenizers.train import build_char
from lmforge.tokenizers.base import Tokenizer

TEXT = "".join(f"line {i}: the quick brown fox 😀 日本\n" for i in range(200)) + "no newline at end"


@pytest.fixture(scope="module")
def char_tok() -> Tokenizer:
    return train_tokenizer("char", [TEXT, "héllo wörld {}\":,abc\ufffd"])


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- files


def test_resolve_file_folder_glob_bundled(tmp_path):
    a = write(tmp_path / "d" / "b.txt", "b")
    b = write(tmp_path / "d" / "sub" / "a.md", "a")
    c = write(tmp_path / "d" / "z.jsonl", '{"text": "z"}\n')
    write(tmp_path / "d" / "ignored.csv", "x")
    write(tmp_path / "d" / ".cache" / "hidden.txt", "x")
    assert resolve_corpus_files(str(a)) == [a]
    assert resolve_corpus_files(str(tmp_path / "d")) == sorted([a, b, c])  # recursive, sorted, no hidden
    assert resolve_corpus_files(str(tmp_path / "d" / "**" / "*.md")) == [b]
    assert resolve_corpus_files("") == [BUNDLED_CORPUS] and BUNDLED_CORPUS.stat().st_size > 1_000_000


def test_resolve_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="data.path '.*nope.txt' does not exist"):
        resolve_corpus_files(str(tmp_path / "nope.txt"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ConfigError, match="empty_dir.*no .txt, .md or .jsonl"):
        resolve_corpus_files(str(tmp_path / "empty_dir"))
    with pytest.raises(ConfigError, match="glob matches no files"):
        resolve_corpus_files(str(tmp_path / "*.txt"))
    write(tmp_path / "e.txt", "")
    with pytest.raises(ConfigError, match="e.txt.*corpus is empty"):
        resolve_corpus_files(str(tmp_path / "e.txt"))


# --------------------------------------------------------------------------- reading


def test_txt_read_in_bounded_pieces_cut_at_newlines(tmp_path):
    path = write(tmp_path / "a.txt", TEXT)
    pieces = list(iter_documents([path], chunk_chars=100))
    assert "".join(pieces) == TEXT  # nothing lost or duplicated, multi-byte chars intact
    assert max(map(len, pieces)) <= 100
    assert all(p.endswith("\n") for p in pieces[:-1])  # lines are whole
    assert list(iter_documents([path])) == [TEXT]  # default chunk: the whole small file


def test_chunked_tokens_equal_whole_file_tokens(tmp_path, char_tok, monkeypatch):
    path = write(tmp_path / "a.txt", TEXT)
    whole = tokenize_corpus([path], char_tok, cache_dir=tmp_path / "c1")
    monkeypatch.setattr(corpus_mod, "ENCODE_CHARS", 7)  # tiny pieces, cut mid-line and mid-word
    monkeypatch.setattr(corpus_mod, "BATCH_CHARS", 50)
    chunked = tokenize_corpus([path], char_tok, cache_dir=tmp_path / "c2")
    assert not chunked.from_cache
    np.testing.assert_array_equal(np.asarray(whole.train), np.asarray(chunked.train))
    np.testing.assert_array_equal(np.asarray(whole.val), np.asarray(chunked.val))
    all_ids = np.concatenate([whole.train, whole.val])
    assert char_tok.decode(all_ids[:-1]) == TEXT and all_ids[-1] == char_tok.eos_id


def test_jsonl_documents_and_errors(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "one", "id": 1}\n\n{"text": "two"}\n')
    assert list(iter_documents([path])) == ["one", "two"]
    other = write(tmp_path / "o.jsonl", '{"body": "x"}\n')
    assert list(iter_documents([other], text_field="body")) == ["x"]
    bad = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"body": "x", "id": 2}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: no field 'text' \(has 'body', 'id'\); set data.text_field"):
        list(iter_documents([bad]))
    broken = write(tmp_path / "broken.jsonl", '{"text": "ok"}\n{"text": \n')
    with pytest.raises(ConfigError, match=r"broken.jsonl:2: not valid JSON"):
        list(iter_documents([broken]))
    typed = write(tmp_path / "typed.jsonl", '{"text": 5}\n')
    with pytest.raises(ConfigError, match=r"typed.jsonl:1: field 'text' must be a string, got int"):
        list(iter_documents([typed]))


def test_non_utf8_error_names_file_and_offset(tmp_path):
    # the bad byte sits after a multi-byte character split across read chunks
    data = "ab😀cd".encode() + b"\xff" + b"tail"
    path = write(tmp_path / "latin.txt", data)
    for chunk in (3, 4, 1 << 20):
        with pytest.raises(ConfigError, match=r"latin.txt: not valid UTF-8 at byte offset 8; .*data.errors=replace"):
            list(iter_documents([path], chunk_chars=chunk))
    assert "".join(iter_documents([path], errors="replace", chunk_chars=3)) == "ab😀cd\ufffdtail"
    jl = write(tmp_path / "l.jsonl", b'{"text": "a"}\n{"text": "b\xe9"}\n')
    with pytest.raises(ConfigError, match=r"l.jsonl: not valid UTF-8 at byte offset 25"):
        list(iter_documents([jl]))
    assert list(iter_documents([jl], errors="replace")) == ["a", "b\ufffd"]


def test_texts_for_training_respect_max_chars(tmp_path):
    path = write(tmp_path / "a.txt", TEXT)
    assert "".join(corpus_texts_for_training([path], max_chars=1000)) == TEXT[:1000]
    assert "".join(corpus_texts_for_training([path])) == TEXT


# --------------------------------------------------------------------------- tokenizing


def test_eos_separates_documents_and_split_sizes(tmp_path, char_tok):
    files = [write(tmp_path / "a.txt", "abc"), write(tmp_path / "b.jsonl", '{"text": "ab"}\n{"text": "c"}\n')]
    out = tokenize_corpus(files, char_tok, val_fraction=0.25, cache_dir=tmp_path / "cache")
    ids = np.concatenate([out.train, out.val]).tolist()
    a, b, c = (char_tok.token_to_id(ch) for ch in "abc")
    eos = char_tok.eos_id
    assert ids == [a, b, c, eos, a, b, eos, c, eos]
    assert out.meta["n_tokens"] == 9 and out.meta["n_documents"] == 3
    assert len(out.train) == int(9 * 0.75) == out.meta["n_train"] and len(out.val) == 3 == out.meta["n_val"]
    assert out.train.dtype == np.uint16 and isinstance(out.train, np.memmap)


def test_sep_separates_documents_when_no_eos(tmp_path):
    # a BERT vocabulary has [SEP] but no end-of-sequence token
    backend = build_char("ab", encoder_specials=True)
    specials = {"pad": "<pad>", "unk": "<unk>", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
    tok = Tokenizer(backend, "hf", specials)
    assert tok.eos_id is None
    out = tokenize_corpus([write(tmp_path / "a.jsonl", '{"text": "a"}\n{"text": "b"}\n')], tok,
                          val_fraction=0.0, cache_dir=tmp_path / "c")
    assert out.train.tolist() == [tok.token_to_id("a"), tok.sep_id, tok.token_to_id("b"), tok.sep_id]


def test_uint32_when_vocab_exceeds_uint16(tmp_path):
    chars = [chr(0x20000 + i) for i in range(65_600)]  # a vocabulary past 65,536 ids
    tok = Tokenizer(build_char(chars), "char")
    text = chars[0] + chars[-1]
    out = tokenize_corpus([write(tmp_path / "a.txt", text)], tok, val_fraction=0.0, cache_dir=tmp_path / "c")
    assert out.train.dtype == np.uint32
    assert out.train.tolist() == [4, 4 + 65_599, 3] and 4 + 65_599 > 65_535


def test_cache_reused_and_invalidated(tmp_path, char_tok):
    path = write(tmp_path / "a.txt", TEXT)
    cache = tmp_path / "cache"
    first = tokenize_corpus([path], char_tok, cache_dir=cache)
    assert not first.from_cache
    stamp = (first.path / "tokens.bin").stat().st_mtime_ns
    second = tokenize_corpus([path], char_tok, cache_dir=cache)
    assert second.from_cache and second.path == first.path
    assert (second.path / "tokens.bin").stat().st_mtime_ns == stamp  # not rewritten
    np.testing.assert_array_equal(first.train, second.train)
    # a different split, tokenizer or content is a different entry
    assert not tokenize_corpus([path], char_tok, val_fraction=0.2, cache_dir=cache).from_cache
    other_tok = train_tokenizer("char", [TEXT + "#"])
    assert not tokenize_corpus([path], other_tok, cache_dir=cache).from_cache
    write(path, TEXT + "x")
    assert not tokenize_corpus([path], char_tok, cache_dir=cache).from_cache
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 4 and not any(n.startswith(".tmp") for n in entries)
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["tokenizer"] == char_tok.fingerprint() and meta["files"] == [str(path)]


def test_interrupted_run_leaves_no_cache(tmp_path, char_tok, monkeypatch):
    path = write(tmp_path / "a.txt", TEXT)
    cache = tmp_path / "cache"
    monkeypatch.setattr(corpus_mod, "ENCODE_CHARS", 50)
    monkeypatch.setattr(corpus_mod, "BATCH_CHARS", 100)
    calls = {"n": 0}
    real = Tokenizer.encode_batch

    def dying(self, texts, add_special=False):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed mid-way through the corpus
        return real(self, texts, add_special)

    monkeypatch.setattr(Tokenizer, "encode_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        tokenize_corpus([path], char_tok, cache_dir=cache)
    assert list(cache.iterdir()) == []  # no entry, no temp folder
    monkeypatch.setattr(Tokenizer, "encode_batch", real)
    out = tokenize_corpus([path], char_tok, cache_dir=cache)
    assert not out.from_cache and out.meta["n_tokens"] == len(TEXT) + 1


def test_damaged_cache_entry_is_rebuilt(tmp_path, char_tok):
    path = write(tmp_path / "a.txt", TEXT)
    first = tokenize_corpus([path], char_tok, cache_dir=tmp_path / "cache")
    with open(first.path / "tokens.bin", "r+b") as f:
        f.truncate(10)
    again = tokenize_corpus([path], char_tok, cache_dir=tmp_path / "cache")
    assert not again.from_cache and again.meta["n_tokens"] == len(TEXT) + 1


def test_default_cache_dir_honours_env(tmp_path, char_tok, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "lmf"))
    out = tokenize_corpus([write(tmp_path / "a.txt", "abc")], char_tok)
    assert out.path.parent == tmp_path / "lmf" / "corpus"


def test_tokenize_errors(tmp_path, char_tok):
    with pytest.raises(ConfigError, match="val_fraction"):
        tokenize_corpus([write(tmp_path / "a.txt", "abc")], char_tok, val_fraction=1.0, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="missing.txt"):
        tokenize_corpus([tmp_path / "missing.txt"], char_tok, cache_dir=tmp_path)
    bad = write(tmp_path / "bad.txt", b"ok\xfe")
    with pytest.raises(ConfigError, match="bad.txt: not valid UTF-8 at byte offset 2"):
        tokenize_corpus([bad], char_tok, cache_dir=tmp_path / "c")
    assert not [p for p in (tmp_path / "c").iterdir()]
    out = tokenize_corpus([bad], char_tok, errors="replace", cache_dir=tmp_path / "c")
    assert char_tok.decode(np.concatenate([out.train, out.val])) == "ok\ufffd"
