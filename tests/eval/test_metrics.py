"""Metrics against hand-computed numbers and the reference libraries called directly."""

import math

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from lmforge.eval import bleu, chrf, classification_report, perplexity, plot_confusion_matrix, rouge

HYPS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "he read the book because he was interested in world history",
]
REFS = [
    "the cat is sitting on the mat",
    "the quick brown fox jumped over the lazy dog",
    "he was interested in world history because he read the book",
]
REFS2 = [
    "there is a cat on the mat",
    "a fast brown fox leaps over a lazy dog",
    "he read the book since world history interested him",
]


def test_perplexity():
    assert perplexity(0) == 1.0
    assert perplexity(math.log(50.0)) == pytest.approx(50.0)
    assert perplexity(1e6) == math.inf  # no OverflowError
    assert math.isnan(perplexity(float("nan")))


def test_identical_text_scores_100():
    assert bleu(HYPS, HYPS) == pytest.approx(100.0)
    assert chrf(HYPS, HYPS) == pytest.approx(100.0)
    scores = rouge(HYPS, HYPS)
    assert scores == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})


def test_bleu_chrf_match_sacrebleu_single_and_multi_reference():
    assert bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    multi = [[a, b] for a, b in zip(REFS, REFS2)]
    assert bleu(HYPS, multi) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score)
    assert chrf(HYPS, multi) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS, REFS2]).score)
    # a row with fewer references: the missing stream entry is skipped, not scored as ""
    ragged = [[REFS[0]], [REFS[1], REFS2[1]], [REFS[2], REFS2[2]]]
    expected = sacrebleu.corpus_bleu(HYPS, [REFS, [None, REFS2[1], REFS2[2]]]).score
    assert bleu(HYPS, ragged) == pytest.approx(expected)
    assert 0 < bleu(HYPS, REFS) < 100


def test_rouge_matches_rouge_score_with_max_over_references():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    multi = [[a, b] for a, b in zip(REFS, REFS2)]
    got = rouge(HYPS, multi)
    for name in ("rouge1", "rouge2", "rougeL"):
        best = [max(scorer.score(r, h)[name].fmeasure for r in refs) for h, refs in zip(HYPS, multi)]
        assert got[name] == pytest.approx(100 * np.mean(best))
        assert got[name] == pytest.approx(
            100 * np.mean([scorer.score_multi(refs, h)[name].fmeasure for h, refs in zip(HYPS, multi)])
        )
    single = rouge(HYPS, REFS)
    assert single["rouge1"] == pytest.approx(100 * np.mean([scorer.score(r, h)["rouge1"].fmeasure for h, r in zip(HYPS, REFS)]))


def test_reference_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 hypotheses but 3"):
        bleu(HYPS[:2], REFS)


def test_classification_report_textbook_example():
    # 3 classes (cat, dog, rabbit), 10 examples; counts worked out by hand:
    #              pred cat  dog  rabbit
    # true cat          3     1     0      support 4
    # true dog          1     2     0      support 3
    # true rabbit       0     1     2      support 3
    y_true = ["cat"] * 4 + ["dog"] * 3 + ["rabbit"] * 3
    y_pred = ["cat", "cat", "cat", "dog", "cat", "dog", "dog", "dog", "rabbit", "rabbit"]
    r = classification_report(y_true, y_pred)
    assert r["labels"] == ["cat", "dog", "rabbit"]
    assert r["confusion"] == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    assert r["accuracy"] == pytest.approx(7 / 10)
    cat, dog, rabbit = (r["per_class"][k] for k in ("cat", "dog", "rabbit"))
    assert (cat["precision"], cat["recall"]) == pytest.approx((3 / 4, 3 / 4))
    assert (dog["precision"], dog["recall"]) == pytest.approx((2 / 4, 2 / 3))
    assert (rabbit["precision"], rabbit["recall"]) == pytest.approx((1.0, 2 / 3))
    assert dog["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # 4/7
    assert rabbit["support"] == 3
    assert r["macro_precision"] == pytest.approx((3 / 4 + 2 / 4 + 1) / 3)
    assert r["macro_f1"] == pytest.approx((3 / 4 + 4 / 7 + 4 / 5) / 3)

    p, rc, f, s = precision_recall_fscore_support(y_true, y_pred, labels=["cat", "dog", "rabbit"], zero_division=0)
    assert [r["per_class"][k]["precision"] for k in ("cat", "dog", "rabbit")] == pytest.approx(list(p))
    assert [r["per_class"][k]["recall"] for k in ("cat", "dog", "rabbit")] == pytest.approx(list(rc))
    assert [r["per_class"][k]["f1"] for k in ("cat", "dog", "rabbit")] == pytest.approx(list(f))
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert (r["macro_precision"], r["macro_recall"], r["macro_f1"]) == pytest.approx((mp, mr, mf))
    assert r["confusion"] == confusion_matrix(y_true, y_pred).tolist()


def test_classification_report_matches_sklearn_on_random_labels_with_names():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200).tolist()
    y_pred = [t if rng.random() < 0.6 else int(rng.integers(0, 4)) for t in y_true]
    y_pred = [p if p != 3 else 2 for p in y_pred]  # class 3 never predicted: precision 0
    r = classification_report(y_true, y_pred, labels=[0, 1, 2, 3], label_names=["a", "b", "c", "d"])
    p, rc, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
    assert [r["per_class"][k]["precision"] for k in "abcd"] == pytest.approx(list(p))
    assert [r["per_class"][k]["f1"] for k in "abcd"] == pytest.approx(list(f))
    assert [r["per_class"][k]["support"] for k in "abcd"] == list(s)
    assert r["per_class"]["d"]["precision"] == 0.0
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        classification_report([0, 1, 1], [0, 1])


def test_confusion_png_is_written(tmp_path):
    path = plot_confusion_matrix([[5, 1], [2, 7]], ["negative", "positive"], tmp_path / "sub" / "confusion.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "bad.png")
