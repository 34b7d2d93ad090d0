"""Training curves from a run's metrics.csv: loss.png, lr.png, and one PNG per validation metric.

The trainer calls `plot_metrics_csv` at every evaluation, so it is built to be cheap (Agg canvas,
no pyplot state, small figures, fast PNG compression; about 0.1 s for a handful of plots) and to
never fail a run: an empty, header-only or half-written file gives fewer plots, not an error.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

__all__ = ["plot_metrics_csv"]

# split names treated as "validation" for metric plots
VAL_SPLITS = ("val", "valid", "validation", "dev")
# columns never plotted as metrics: the axes, the loss (in loss.png) and bookkeeping
_NOT_METRICS = {"step", "split", "loss", "elapsed_s", "elapsed", "epoch", "time"}
# columns plotted from the training rows (the schedule), not from validation rows
TRAIN_COLUMNS = {"lr"}


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
    """Rows of a (possibly partial) CSV; a truncated last line is dropped."""
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
        text = f.read()
    if not text.strip():
        return []
    complete = text.endswith("\n")
    lines = text.splitlines()
    if not complete and len(lines) > 1:  # the writer is mid-line: ignore the unfinished row
        lines = lines[:-1]
    return list(csv.DictReader(lines))


def _number(value: str | None) -> float | None:
    """float(value), or None for empty / non-numeric / non-finite cells."""
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


Curves = dict[str, list[tuple[float, float]]]  # label -> [(step, value)]


def _collect(rows: list[dict[str, str]]) -> tuple[Curves, dict[str, Curves]]:
    """(loss points per split, {metric: curves}).

    Metrics come from validation rows, except the learning rate, which the training rows
    carry at every log step. Perplexity also gets a train curve, exp(train loss), so a short
    run shows a line rather than the one or two points its evaluations made.
    """
    loss: Curves = {}
    metrics: dict[str, Curves] = {}
    for row in rows:
        step = _number(row.get("step"))
        split = (row.get("split") or "").strip()
        if step is None or not split:
            continue
        value = _number(row.get("loss"))
        if value is not None:
            loss.setdefault(split, []).append((step, value))
        if split == "train":
            for name in TRAIN_COLUMNS:
                cell = _number(row.get(name))
                if cell is not None:
                    metrics.setdefault(name, {}).setdefault(name, []).append((step, cell))
            if "ppl" in row and value is not None and value < 50:  # exp(50) overflows the axis
                metrics.setdefault("ppl", {}).setdefault("train", []).append((step, math.exp(value)))
            continue
        if split not in VAL_SPLITS:
            continue
        for name, cell in row.items():
            if name is None or name in _NOT_METRICS or name in TRAIN_COLUMNS:
                continue  # name None: extra cells of a ragged row
            value = _number(cell)
            if value is not None:
                metrics.setdefault(name, {}).setdefault(split if name == "ppl" else name,
                                                        []).append((step, value))
    return loss, metrics


def _safe_name(name: str) -> str:
    """A metric name as a file name: 'val/ppl' -> 'val_ppl'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "metric"


def plot_metrics_csv(csv_path: str | os.PathLike, out_dir: str | os.PathLike,
                     title: str | None = None) -> list[Path]:
    """Plot metrics.csv (columns step, split, loss, ...) into PNGs in `out_dir`; returns their paths.

    Writes `out_dir/loss.png` (one loss curve per split: train, val, ...), `out_dir/lr.png`
    (the schedule, from the training rows) and `out_dir/<metric>.png` for every other numeric
    column that has values on validation rows (split val/valid/validation/dev), e.g. ppl.png
    (with a train curve, exp(train loss)), accuracy.png, bleu.png. Each plot is titled with
    `title` (default: the run folder's name). The trainer passes `run_dir / "plots"` as
    `out_dir`. Files are replaced atomically.
    """
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    title = csv_path.resolve().parent.name if title is None else title
    if not csv_path.exists():
        raise ValueError(f"{csv_path}: metrics file not found")
    loss, metrics = _collect(_read_rows(csv_path))
    if not loss and not metrics:
        return []

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .metrics import _save_figure

    written: list[Path] = []

    def draw(curves: dict[str, list[tuple[float, float]]], ylabel: str, name: str, log_y: bool = False) -> None:
        fig = Figure(figsize=(6.0, 3.6), dpi=90)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for label, points in curves.items():
            points.sort()
            steps = [p[0] for p in points]
            values = [p[1] for p in points]
            marker = "o" if len(points) <= 30 else None  # sparse eval points stay visible
            ax.plot(steps, values, label=label, marker=marker, markersize=3, linewidth=1.2)
        if log_y and all(v > 0 for pts in curves.values() for _, v in pts):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if len(curves) > 1 or name == "loss":
            ax.legend(loc="best")
        fig.tight_layout()
        written.append(_save_figure(fig, out_dir / f"{name}.png"))

    if loss:
        # train first, then val, then any other split, so colours stay stable across calls
        order = sorted(loss, key=lambda s: (s != "train", s not in VAL_SPLITS, s))
        draw({s: loss[s] for s in order}, "loss", "loss")
    for metric, curves in sorted(metrics.items()):
        name = _safe_name(metric)
        order = sorted(curves, key=lambda s: (s != "train", s))  # train first, as in loss.png
        draw({c: curves[c] for c in order}, metric, name,
             log_y=name in {"lr", "ppl", "val_ppl", "perplexity"})
    return written
