"""Evaluation metrics shared by every task: perplexity, classification, BLEU/chrF, ROUGE.

Text metrics call the reference libraries the field reports with, so numbers compare to
published ones: BLEU and chrF through `sacrebleu` (its default `13a` tokenization), ROUGE
through Google's `rouge-score` (with the Porter stemmer). BLEU, chrF and ROUGE are on a
0-100 scale; classification figures (accuracy, precision, recall, F1) are fractions 0-1,
as in scikit-learn.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "perplexity",
    "classification_report",
    "plot_confusion_matrix",
    "bleu",
    "chrf",
    "rouge",
]


# --------------------------------------------------------------------------- language modelling


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy loss in nats); `inf` instead of an OverflowError for huge losses.

    >>> perplexity(0.0)
    1.0
    """
    loss = float(loss)
    if math.isnan(loss):
        return math.nan
    try:
        return math.exp(loss)
    except OverflowError:  # exp overflows float64 above ~709.78
        return math.inf


# --------------------------------------------------------------------------- classification


def classification_report(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    labels: Sequence[Hashable] | None = None,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix.

    Args:
        y_true, y_pred: gold and predicted labels (ints or strings), same length.
        labels: the classes, in the order rows/columns of the matrix use; default is the
            sorted union of the labels seen in `y_true` and `y_pred`.
        label_names: display names for `labels` (same length), used as keys of `per_class`.

    Returns a dict:
        accuracy, macro_precision, macro_recall, macro_f1: floats in [0, 1];
        per_class: {name: {precision, recall, f1, support}};
        confusion: list of lists, rows = true class, columns = predicted class;
        labels: the label order; label_names: their names; n: number of examples.

    A class never predicted has precision 0, a class never present has recall 0 (scikit-learn's
    `zero_division=0`). Predictions outside `labels` count as wrong and fall out of the matrix.

    Worked example: y_true = [0, 0, 1, 1], y_pred = [0, 1, 1, 1] gives accuracy 0.75,
    class 0 precision 1.0 recall 0.5, class 1 precision 2/3 recall 1.0,
    confusion [[1, 1], [0, 2]].
    """
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred), key=_sort_key)
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels contains duplicates: {labels}")
    if label_names is None:
        label_names = [str(label) for label in labels]
    label_names = [str(name) for name in label_names]
    if len(label_names) != len(labels):
        raise ValueError(f"label_names has {len(label_names)} names for {len(labels)} labels")

    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)  # (true, pred)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            confusion[index[t], index[p]] += 1

    tp = np.diag(confusion).astype(np.float64)  # (k,)
    predicted = confusion.sum(axis=0).astype(np.float64)  # column sums
    seen = Counter(y_true)
    support = np.array([seen[label] for label in labels], dtype=np.int64)  # includes rows predicted outside `labels`
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)

    n = len(y_true)
    accuracy = sum(1 for t, p in zip(y_true, y_pred) if t == p) / n if n else 0.0
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(label_names)
    }
    return {
        "accuracy": float(accuracy),
        "macro_precision": float(precision.mean()) if k else 0.0,
        "macro_recall": float(recall.mean()) if k else 0.0,
        "macro_f1": float(f1.mean()) if k else 0.0,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "labels": labels,
        "label_names": label_names,
        "n": n,
    }


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _sort_key(label: Hashable) -> tuple[int, Any]:
    """Sort numbers numerically, everything else as strings, numbers first."""
    if isinstance(label, (int, float, np.integer, np.floating)) and not isinstance(label, bool):
        return (0, float(label))
    return (1, str(label))


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    label_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix",
    normalize: bool = False,
) -> Path:
    """Write the confusion matrix (rows true, columns predicted) as a PNG; returns the path.

    With `normalize=True` each row is divided by its sum (per-class recall on the diagonal);
    cells always show the raw count.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    k = len(label_names)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({k}, {k})")
    shown = counts
    if normalize:
        shown = _safe_div(counts, counts.sum(axis=1, keepdims=True).repeat(k, axis=1))

    # Figure + Agg canvas directly: no pyplot global state, works headless and in threads.
    side = max(3.5, 0.6 * k + 2.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=list(label_names), rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), labels=list(label_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 30:  # numbers stay legible up to about 30 classes
        threshold = shown.max() / 2 if shown.size and shown.max() > 0 else 0.5
        for i in range(k):
            for j in range(k):
                colour = "white" if shown[i, j] > threshold else "black"
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour, fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, path)


def _save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Save a matplotlib Figure as PNG atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 1})  # fast zlib level
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- translation


def _reference_streams(references: Sequence[str] | Sequence[Sequence[str]], n: int) -> list[list[str | None]]:
    """Turn references (one string per row, or a list per row) into sacrebleu's streams.

    sacrebleu wants `[stream_1, stream_2, ...]`, each stream one reference per hypothesis;
    rows with fewer references are padded with None, which sacrebleu skips.

    >>> _reference_streams([["a", "b"], ["c"]], 2)
    [['a', 'c'], ['b', None]]
    """
    if len(references) != n:
        raise ValueError(f"got {n} hypotheses but {len(references)} reference rows")
    rows = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(f"reference row {i} is empty")
    width = max((len(row) for row in rows), default=1)
    return [[row[s] if s < len(row) else None for row in rows] for s in range(width)]


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100) by `sacrebleu.corpus_bleu` with its default 13a tokenization.

    `references[i]` is the reference string for `hypotheses[i]`, or a list of them.
    """
    import sacrebleu

    hypotheses = list(hypotheses)
    return float(sacrebleu.corpus_bleu(hypotheses, _reference_streams(references, len(hypotheses))).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus chrF (0-100) by `sacrebleu.corpus_chrf` with its defaults (char 6-grams, beta 2)."""
    import sacrebleu

    hypotheses = list(hypotheses)
    return float(sacrebleu.corpus_chrf(hypotheses, _reference_streams(references, len(hypotheses))).score)


# --------------------------------------------------------------------------- summarization

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_scorer: Any = None


def rouge(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> dict[str, float]:
    """ROUGE-1/2/L F-measure (0-100), mean over examples of the best score over references.

    Uses `rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)`;
    for a row with several references each ROUGE type takes its maximum F-measure over them
    (what `RougeScorer.score_multi` does). Returns {"rouge1", "rouge2", "rougeL"}.
    """
    global _scorer
    if _scorer is None:  # building the scorer loads the stemmer; do it once
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    hypotheses = list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} reference rows")
    totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise ValueError(f"reference row {i} is empty")
        scores = [_scorer.score(ref, hyp) for ref in refs]  # score(target, prediction)
        for name in _ROUGE_TYPES:
            totals[name] += max(s[name].fmeasure for s in scores)
    n = max(len(hypotheses), 1)
    return {name: 100.0 * total / n for name, total in totals.items()}
