"""PNG figures of a data audit: length histograms, language mix, PII by type, label balance."""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any


def _figure(width: float = 6.0, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path)
    return path.name


def _bars(ax: Any, counts: dict[str, int], title: str, top: int = 15) -> None:
    items = list(counts.items())[:top]
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#4477aa")
    ax.set_title(title)


def audit_plots(report: dict[str, Any], chars: array, tokens: array, folder: Path) -> list[str]:
    """Write the audit's PNGs into `folder`; returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for name, values in (("chars", chars), ("tokens", tokens)):
        if values:
            fig, ax = _figure()
            ax.hist(list(values), bins=50, color="#4477aa")
            ax.set_yscale("log")
            ax.set_xlabel(f"{name} per document")
            ax.set_ylabel("documents")
            ax.set_title(f"document length ({name})")
            made.append(_save(fig, folder / f"lengths_{name}.png"))
    for field, counts in report["languages"].items():
        fig, ax = _figure()
        _bars(ax, counts, f"languages ({field})")
        made.append(_save(fig, folder / f"languages_{field}.png"))
    if report["pii"]["by_type"]:
        fig, ax = _figure()
        _bars(ax, report["pii"]["by_type"], "PII found, by type")
        made.append(_save(fig, folder / "pii.png"))
    labelled = [f for f in report["files"] if f.get("labels")]
    if labelled:
        fig, ax = _figure(6.0, 1.0 + 0.5 * len(labelled))
        names = [f["file"] for f in labelled]
        left = [0.0] * len(labelled)
        for label in sorted({k for f in labelled for k in f["labels"]}):
            shares = [f["labels"].get(label, 0) / f["documents"] for f in labelled]
            ax.barh(names, shares, left=left, label=label)
            left = [a + b for a, b in zip(left, shares)]
        ax.set_xlim(0, 1)
        ax.set_title("label balance")
        ax.legend(loc="lower right", fontsize="small")
        made.append(_save(fig, folder / "labels.png"))
    return made
