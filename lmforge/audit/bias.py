"""`lmforge audit bias`: how a classifier run does for each group of people in labelled data.

    lmforge audit bias runs/sst --data reviews.tsv --group-field group

Per group (fairlearn's MetricFrame does the bookkeeping): accuracy, macro-F1, and, for the
positive class, F1, positive (selection) rate, false-positive and false-negative rates; then
each metric's largest gap between groups (`difference`) and smallest ratio (`ratio`).
A group with fewer than `--min-count` examples is reported with a warning: its rates are
too noisy to compare.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import ConfigError
from ..data.labelled import label_string
from . import need
from .records import DelimitedSource, JsonlSource, discover

POSITIVE_NAMES = ("1", "pos", "positive", "true", "yes")


def read_grouped(path: str | Path, group_field: str, text_field: str | None = None,
                 label_field: str = "label") -> tuple[list[str], list[str], list[str]]:
    """(texts, labels, groups) of a TSV/CSV/JSONL file; a missing column lists the columns."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file {str(path)!r} does not exist")
    (source,) = discover(path, text_fields=[text_field] if text_field else None,
                         label_field=label_field)
    if not isinstance(source, (DelimitedSource, JsonlSource)):
        raise ConfigError(f"{path}: bias audits read TSV, CSV or JSONL with text, label and "
                          "group columns")
    texts, labels, groups = [], [], []
    for rec in source.records():
        columns = source.header if isinstance(source, DelimitedSource) else list(rec.raw)
        for name, what in ((group_field, "group"), (label_field, "label")):
            if name not in columns:
                where = f" line {rec.line}" if isinstance(source, JsonlSource) else ""
                raise ConfigError(f"{path}{where}: no {what} column {name!r}; columns found: "
                                  f"{', '.join(map(repr, columns))} (set --{what}-field)")
        group = rec.raw[source.header.index(group_field)] if isinstance(source, DelimitedSource) \
            else rec.raw[group_field]
        texts.append(rec.text)
        labels.append(label_string(rec.raw[label_field]) if isinstance(source, JsonlSource)
                      else label_string(rec.label))
        groups.append(str(group).strip())
    if not texts:
        raise ConfigError(f"{path}: no rows")
    return texts, labels, groups


def positive_label(names: list[str], chosen: str | None) -> str:
    if chosen is not None:
        if chosen not in names:
            raise ConfigError(f"--positive {chosen!r} is not a label of the run ({', '.join(names)})")
        return chosen
    return next((n for n in names if n.lower() in POSITIVE_NAMES), names[-1])


def group_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: list[str], positive: int,
                  min_count: int = 30) -> dict[str, Any]:
    """Per-group metrics, overall values, and the gaps between groups (fairlearn)."""
    need("fairlearn", "fairlearn")
    from fairlearn.metrics import (MetricFrame, count, false_negative_rate, false_positive_rate,
                                   selection_rate)
    from sklearn.metrics import accuracy_score, f1_score

    yt, yp = (y_true == positive).astype(int), (y_pred == positive).astype(int)
    # the rate metrics are about the positive class (one-vs-rest when there are more classes)
    frame = MetricFrame(
        metrics={"count": count, "accuracy": accuracy_score,
                 "f1": lambda a, b: f1_score(a, b, zero_division=0),
                 "positive_rate": selection_rate, "fpr": false_positive_rate,
                 "fnr": false_negative_rate},
        y_true=yt, y_pred=yp, sensitive_features=np.asarray(groups))
    multi = MetricFrame(metrics={"accuracy": accuracy_score,
                                 "macro_f1": lambda a, b: f1_score(a, b, average="macro", zero_division=0)},
                        y_true=y_true, y_pred=y_pred, sensitive_features=np.asarray(groups))
    small = [g for g, n in frame.by_group["count"].items() if n < min_count]
    for g in small:
        warnings.warn(f"group {g!r} has only {int(frame.by_group['count'][g])} examples "
                      f"(< --min-count {min_count}): its metrics are too noisy to compare",
                      UserWarning, stacklevel=2)
    rates = ["accuracy", "macro_f1", "f1", "positive_rate", "fpr", "fnr"]
    # multi (every class) last: its accuracy replaces the one-vs-rest accuracy
    overall = {**frame.overall.to_dict(), **multi.overall.to_dict()}
    diff = {**frame.difference().to_dict(), **multi.difference().to_dict()}
    ratio = {**frame.ratio().to_dict(), **multi.ratio().to_dict()}
    clean = lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)  # noqa: E731
    return {
        # accuracy and macro-F1 over every class; the other rates for the positive class
        "by_group": {str(g): {k: clean(multi.by_group.loc[g, k] if k in ("accuracy", "macro_f1")
                                       else row[k]) for k in ["count", *rates]}
                     for g, row in frame.by_group.iterrows()},
        "overall": {k: clean(overall[k]) for k in ["count", *rates] if k in overall},
        "difference": {k: clean(diff[k]) for k in rates},
        "ratio": {k: clean(ratio[k]) for k in rates},
        "small_groups": small, "min_count": min_count,
    }


def audit_bias(run: str | Path, data: str | Path, group_field: str, text_field: str | None = None,
               label_field: str = "label", positive: str | None = None, min_count: int = 30,
               log: Callable = print) -> dict[str, Any]:
    from ..tasks.classify import TextClassifier

    texts, labels, groups = read_grouped(data, group_field, text_field, label_field)
    clf = TextClassifier.load(run)
    names = list(clf.labels.names)
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ConfigError(f"{data}: label {unknown[0]!r} is not one the run knows ({', '.join(names)})")
    pos = positive_label(names, positive)
    y_true = np.array([names.index(y) for y in labels])
    y_pred = clf.predict_proba(texts).argmax(1)
    report = {"run": str(run), "data": str(data), "group_field": group_field, "positive": pos,
              **group_metrics(y_true, y_pred, groups, names.index(pos), min_count)}
    log(format_table(report))
    return report


def format_table(r: dict[str, Any]) -> str:
    cols = ["count", "accuracy", "macro_f1", "f1", "positive_rate", "fpr", "fnr"]
    width = max(8, *(len(g) for g in r["by_group"]))
    lines = [f"{'group':<{width}} " + " ".join(f"{c:>13}" for c in cols)]
    fmt = lambda v: f"{v:>13.4f}" if v is not None else f"{'-':>13}"  # noqa: E731
    for g, row in list(r["by_group"].items()) + [("(all)", r["overall"])]:
        lines.append(f"{g:<{width}} {int(row['count']):>13} " + " ".join(fmt(row[c]) for c in cols[1:]))
    gaps = " ".join(fmt(r["difference"][c]) for c in cols[1:])
    lines.append(f"{'gap (max-min)':<{width}} {'':>13} {gaps}")
    lines.append(f"positive class: {r['positive']!r}; rates (positive_rate, fpr, fnr, f1) are for it")
    return "\n".join(lines)


def bias_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lmforge audit bias",
                                description="Per-group metrics of a classifier run (fairlearn).")
    p.add_argument("run", help="classifier run folder")
    p.add_argument("--data", required=True, help="labelled TSV/CSV/JSONL with a group column")
    p.add_argument("--group-field", required=True)
    p.add_argument("--text-field")
    p.add_argument("--label-field", default="label")
    p.add_argument("--positive", help="the positive class (default: 1/pos/positive, else the last)")
    p.add_argument("--min-count", type=int, default=30, help="warn about smaller groups")
    p.add_argument("--out", help="write the report here as JSON")
    a = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *args, **kw: print(f"lmforge: warning: {msg}")
        report = audit_bias(a.run, a.data, a.group_field, a.text_field, a.label_field,
                            a.positive, a.min_count)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0
