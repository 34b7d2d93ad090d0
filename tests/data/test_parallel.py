"""Parallel data: reading both layouts, bad input, truncation, collation and resumable batches."""

import json

import numpy as np
import pytest
import torch

from lmforge.config import ConfigError
from lmforge.data.parallel import (EncodedPairs, PairBatches, collate, encode_pairs, eval_batches,
                                   length_batches, list_splits, read_split, split_off)


class CharTok:
    """A stand-in tokenizer: one id per character (a=4 ...), specials 0-3."""

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    def encode_batch(self, texts):
        return [[4 + (ord(c) % 50) for c in t] for t in texts]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_text_pairs_any_split_name_and_empty_lines(tmp_path):
    write(tmp_path / "test_2016.de", ["ein hund", "", "eine katze", "ein baum"])
    write(tmp_path / "test_2016.en", ["a dog", "a bird", "a cat", "  "])
    split = read_split(tmp_path, "test_2016", "de", "en")
    assert split.sources == ["ein hund", "eine katze"]
    assert split.targets == ["a dog", "a cat"]
    assert split.references == [["a dog"], ["a cat"]]
    assert split.skipped_empty == 2
    assert list_splits(tmp_path, "de", "en") == ["test_2016"]


def test_misaligned_files_name_both_files_and_counts(tmp_path):
    write(tmp_path / "train.de", ["a", "b", "c"])
    write(tmp_path / "train.en", ["a", "b"])
    with pytest.raises(ConfigError, match=r"train\.de has 3 lines but .*train\.en has 2"):
        read_split(tmp_path, "train", "de", "en")


def test_missing_split_and_languages_are_named(tmp_path):
    write(tmp_path / "train.de", ["a"])
    write(tmp_path / "train.en", ["a"])
    with pytest.raises(ConfigError, match="no split 'dev'.*found splits: train"):
        read_split(tmp_path, "dev", "de", "en")
    with pytest.raises(ConfigError, match="need --src and --tgt"):
        read_split(tmp_path, "train")
    with pytest.raises(ConfigError, match="does not exist"):
        read_split(tmp_path / "nope", "train", "de", "en")


def test_jsonl_with_references(tmp_path):
    rows = [{"source": "long text one", "target": "one", "references": ["one", "first"]},
            {"source": "long text two", "target": "two"},
            {"source": "", "target": "skipped"}]
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    split = read_split(tmp_path, "val")
    assert split.references == [["one", "first"], ["two"]]
    assert split.skipped_empty == 1
    same = read_split(tmp_path / "val.jsonl", "anything")  # a file path is every split
    assert same.sources == split.sources


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"source": "a", "target": "b"}\n{not json}\n')
    with pytest.raises(ConfigError, match=r"train\.jsonl:2: not valid JSON"):
        read_split(tmp_path, "train")
    path.write_text('{"text": "a"}\n')
    with pytest.raises(ConfigError, match=r"train\.jsonl:1: no 'source' field"):
        read_split(tmp_path, "train")


def test_truncation_is_counted_and_keeps_eos(tmp_path):
    write(tmp_path / "train.src", ["abcdefgh", "ab"])
    write(tmp_path / "train.tgt", ["xy", "vwxyz"])
    pairs = encode_pairs(read_split(tmp_path, "train", "src", "tgt"), CharTok(), CharTok(),
                         max_src_len=5, max_tgt_len=4)
    assert pairs.truncated_src == 1 and pairs.truncated_tgt == 1
    assert len(pairs.src[0]) == 5 and pairs.src[0][-1] == CharTok.eos_id
    assert len(pairs.tgt[1]) == 3  # room left for <bos> / <eos>


def test_collate_worked_example():
    pairs = EncodedPairs([np.array([5, 3]), np.array([6, 7, 3])], [np.array([8]), np.array([9, 9])],
                         bos_id=2, eos_id=3)
    batch = collate(pairs, [0, 1], pad_id=0)
    assert batch.src.tolist() == [[5, 3, 0], [6, 7, 3]]
    assert batch.src_mask.tolist() == [[True, True, False], [True, True, True]]
    assert batch.tgt_in.tolist() == [[2, 8, 0], [2, 9, 9]]
    assert batch.tgt_out.tolist() == [[8, 3, -100], [9, 9, 3]]


def _random_pairs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    src = [np.append(rng.integers(4, 50, rng.integers(1, 30)), 3) for _ in range(n)]
    tgt = [rng.integers(4, 50, rng.integers(1, 30)) for _ in range(n)]
    return EncodedPairs(src, tgt, 2, 3)


def test_batches_cover_each_epoch_once_and_resume_exactly():
    pairs = _random_pairs()
    a = PairBatches(pairs, batch_size=16, pad_id=0, seed=7)
    seen = []
    for _ in range(len(a)):
        seen += a._batches[a.position].tolist()
        a.next()
    assert sorted(seen) == list(range(len(pairs)))  # every pair exactly once per epoch
    for _ in range(5):
        a.next()
    state = a.state_dict()
    expected = [a.next().src for _ in range(len(a) + 3)]  # crosses an epoch boundary
    b = PairBatches(pairs, batch_size=16, pad_id=0, seed=7)
    b.load_state_dict(state)
    for want in expected:
        torch.testing.assert_close(b.next().src, want)


def test_token_budget_batches():
    lengths = np.array([5, 10, 10, 20, 3, 40])
    order = np.argsort(lengths, kind="stable")
    batches = length_batches(lengths, order, batch_size=0, max_tokens=30)
    for rows in batches:
        assert len(rows) == 1 or lengths[rows].max() * len(rows) <= 30
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    pairs = _random_pairs()
    budget = PairBatches(pairs, batch_size=0, pad_id=0, max_tokens=200)
    for _ in range(len(budget)):
        batch = budget.next()
        assert batch.src.numel() <= 200 or batch.src.size(0) == 1


def test_eval_batches_and_split_off():
    pairs = _random_pairs(50)
    rows = np.concatenate([r for r, _ in eval_batches(pairs, 16, 0, limit=40)])
    assert sorted(rows.tolist()) == list(range(40))
    from lmforge.data.parallel import ParallelSplit

    split = ParallelSplit("train", [f"s{i}" for i in range(20)], [f"t{i}" for i in range(20)],
                          [[f"t{i}"] for i in range(20)])
    train, val = split_off(split, 0.25, seed=0)
    assert len(train) == 15 and len(val) == 5
    assert set(train.sources) | set(val.sources) == set(split.sources)


def test_ranks_share_out_the_batches_of_one_process():
    # world 2: each step takes the next two batches of the one-process stream, rank r the r-th,
    # so two ranks together train on exactly what one process with grad_accum 2 would,
    # across epoch boundaries too
    pairs = _random_pairs()
    one = PairBatches(pairs, batch_size=16, pad_id=0, seed=7)
    ranks = [PairBatches(pairs, batch_size=16, pad_id=0, seed=7, rank=r, world_size=2) for r in (0, 1)]
    assert len(one) % 2 == 1  # an odd epoch, so a step straddles the boundary
    for _ in range(len(one) + 2):
        for r in ranks:
            torch.testing.assert_close(r.next().src, one.next().src)
    assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()
