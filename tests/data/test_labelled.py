"""Labelled rows: readers, label maps, bad-input errors, and the batches that feed training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmforge.config import ConfigError
from lmforge.data.labelled import (LabelledBatches, LabelMap, class_weights, encode_texts,
                                   evaluation_file, read_labelled, resolve_splits, split_off,
                                   warn_if_one_class)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_csv_jsonl_read_the_same_rows(tmp_path):
    tsv = write(tmp_path / "a.tsv", 'sentence\tlabel\na "quoted" film\t1\nbad , bad\t0\n')
    csv_ = write(tmp_path / "a.csv", 'text,label\n"a ""quoted"" film",1\n"bad , bad",0\n')
    jsonl = write(tmp_path / "a.jsonl", json.dumps({"text": 'a "quoted" film', "label": 1}) + "\n"
                  + json.dumps({"text": "bad , bad", "label": 0}) + "\n")
    for path in (tsv, csv_, jsonl):
        split = read_labelled(path)
        assert split.texts == ['a "quoted" film', "bad , bad"]
        assert split.labels == ["1", "0"]  # ints and strings both become "1"


def test_custom_fields_and_sniffed_format(tmp_path):
    path = write(tmp_path / "reviews.txt", "stars\treview\n5\tloved it\n1\thated it\n")
    split = read_labelled(path, text_field="review", label_field="stars")
    assert split.texts == ["loved it", "hated it"] and split.labels == ["5", "1"]


def test_missing_column_lists_the_columns_found(tmp_path):
    path = write(tmp_path / "r.csv", "review,stars\ngreat,5\n")
    with pytest.raises(ConfigError, match=r"r.csv: no text column.*columns found: 'review', 'stars'"):
        read_labelled(path)
    with pytest.raises(ConfigError, match=r"no label column 'label'; columns found: 'review', 'stars'"):
        read_labelled(path, text_field="review")
    jsonl = write(tmp_path / "r.jsonl", '{"text": "x", "y": 1}\n')
    with pytest.raises(ConfigError, match=r"r.jsonl line 1: no label column 'label'; columns found: 'text', 'y'"):
        read_labelled(jsonl)


def test_mixed_delimiters_are_named(tmp_path):
    path = write(tmp_path / "mixed.tsv", "sentence\tlabel\ngood film\t1\nbad film,0\n")
    with pytest.raises(ConfigError, match=r"mixed.tsv line 3: mixed delimiters"):
        read_labelled(path)
    path = write(tmp_path / "mixed.csv", "text,label\ngood film,1\nbad film\t0\n")
    with pytest.raises(ConfigError, match=r"mixed.csv line 3: mixed delimiters"):
        read_labelled(path)
    path = write(tmp_path / "wrong.tsv", "text,label\ngood,1\n")
    with pytest.raises(ConfigError, match=r"wrong.tsv: the header has no tabs but has commas"):
        read_labelled(path)


def test_empty_texts_skipped_with_a_count_or_refused(tmp_path):
    path = write(tmp_path / "e.tsv", "text\tlabel\ngood\t1\n   \t0\n\t1\nbad\t0\n")
    split = read_labelled(path)
    assert split.texts == ["good", "bad"] and split.skipped_empty == 2
    with pytest.raises(ConfigError, match=r"e.tsv line 3: empty text"):
        read_labelled(path, empty="error")
    only_empty = write(tmp_path / "only.tsv", "text\tlabel\n \t1\n")
    with pytest.raises(ConfigError, match="no examples"):
        read_labelled(only_empty)


def test_unknown_labels_are_named_with_the_file(tmp_path):
    train = read_labelled(write(tmp_path / "train.tsv", "text\tlabel\na\tpos\nb\tneg\n"))
    dev = read_labelled(write(tmp_path / "dev.tsv", "text\tlabel\nc\tpos\nd\tneutral\ne\tmixed\n"))
    labels = LabelMap.fit(train.labels)
    assert labels.names == ["neg", "pos"]
    with pytest.raises(ConfigError, match=r"dev.tsv: 2 rows have labels the training data never "
                                          r"had: 'mixed', 'neutral'"):
        labels.encode(dev.labels, dev.path)


def test_label_map_orders_numbers_numerically_and_round_trips(tmp_path):
    labels = LabelMap.fit(["10", "2", "1", "2"])
    assert labels.names == ["1", "2", "10"]
    assert labels.encode(["10", "1"], "x").tolist() == [2, 0]
    labels.save(tmp_path / "labels.json")
    assert LabelMap.load(tmp_path).names == ["1", "2", "10"]
    assert LabelMap.fit(["b", "a"], declared=["b", "a", "c"]).names == ["b", "a", "c"]
    with pytest.raises(ConfigError, match=r"labels \['z'\] are not among the declared"):
        LabelMap.fit(["a", "z"], declared=["a", "b"])


def test_one_class_warns(tmp_path):
    split = read_labelled(write(tmp_path / "one.tsv", "text\tlabel\na\t1\nb\t1\n"))
    with pytest.warns(UserWarning, match=r"one.tsv: every label is '1' \(one class\)"):
        assert warn_if_one_class(split)


def test_folder_splits_accept_val_and_single_file(tmp_path):
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        write(tmp_path / name, '{"text": "x", "label": 0}\n')
    files = resolve_splits(tmp_path)
    assert files["dev"].name == "val.jsonl" and files["test"].name == "test.jsonl"
    assert evaluation_file(tmp_path).name == "test.jsonl"
    assert resolve_splits(tmp_path / "train.jsonl")["dev"] is None
    with pytest.raises(ConfigError, match="no train.tsv"):
        resolve_splits(tmp_path / "..")


def test_split_off_is_seeded_and_disjoint(tmp_path):
    split = read_labelled(write(tmp_path / "t.tsv", "text\tlabel\n" + "".join(f"t{i}\t{i % 2}\n" for i in range(50))))
    a_train, a_dev = split_off(split, 0.2, seed=3)
    b_train, b_dev = split_off(split, 0.2, seed=3)
    assert a_dev.texts == b_dev.texts and len(a_dev) == 10 and len(a_train) == 40
    assert not set(a_dev.texts) & set(a_train.texts)


def test_class_weights_balanced():
    assert class_weights(np.array([0, 0, 0, 1]), 2) == pytest.approx([2 / 3, 2.0])


class _Tok:
    """The three things encode_texts needs from a tokenizer."""

    unk_id, pad_id = 1, 0

    def encode_batch(self, texts, add_special=False):
        return [[10 + len(w) for w in t.split()] for t in texts]


def test_encode_truncates_either_end_and_fills_empty():
    ids, cut = encode_texts(_Tok(), ["a bb ccc dddd", "", "a"], max_len=2)
    assert [r.tolist() for r in ids] == [[11, 12], [1], [11]] and cut == 1
    ids, _ = encode_texts(_Tok(), ["a bb ccc dddd"], max_len=2, truncate="start")
    assert ids[0].tolist() == [13, 14]


def _rows(n=23):
    rng = np.random.default_rng(0)
    return [rng.integers(4, 20, size=rng.integers(1, 9)) for _ in range(n)], np.arange(n) % 3


def test_epochs_are_permutations_with_bucketed_lengths():
    ids, labels = _rows(230)
    b = LabelledBatches(ids, labels, batch_size=8, pool=5, seed=1)
    plan = b.plan(0)
    assert len(plan) == len(b) == 29
    assert sorted(np.concatenate(plan).tolist()) == list(range(230))
    assert [r.tolist() for r in plan] != [r.tolist() for r in b.plan(1)]
    # bucketing: within a batch lengths are close (sorted pools), far less spread than random
    spread = np.mean([np.ptp(b.lengths[r]) for r in plan[:-1]])
    random_b = LabelledBatches(ids, labels, batch_size=8, bucket=False, seed=1)
    assert spread < np.mean([np.ptp(random_b.lengths[r]) for r in random_b.plan(0)[:-1]])


def test_batches_pad_right_or_left_with_masks():
    ids = [np.array([5, 6, 7]), np.array([8])]
    right = LabelledBatches(ids, np.array([1, 0]), 2, pad_id=0, shuffle=False, bucket=False)
    (_, (x, mask, y)), = list(right)
    assert x.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert y.tolist() == [1, 0]
    left = LabelledBatches(ids, None, 2, pad_id=0, shuffle=False, bucket=False, padding="left")
    (_, (x, mask)), = list(left)
    assert x.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_resume_continues_the_exact_batch_sequence():
    ids, labels = _rows(40)
    a = LabelledBatches(ids, labels, batch_size=6, seed=7)
    for _ in range(9):  # into the second epoch
        a.next()
    state = a.state_dict()
    expected = [a.next() for _ in range(12)]
    b = LabelledBatches(ids, labels, batch_size=6, seed=7)
    b.load_state_dict(state)
    got = [b.next() for _ in range(12)]
    for e, g in zip(expected, got):
        assert all(torch.equal(x, y) for x, y in zip(e, g))
