"""The classification task: its options (config.yaml `task:`), the Trainer task, and scoring.

The recipe that trains it is `tasks/classify.py`; a trained run is used through
`tasks/classify_infer.py` (TextClassifier, `lmforge evaluate`, `lmforge predict`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, _from_dict
from ..data.labelled import LabelledBatches, LabelMap
from ..eval.metrics import classification_report, plot_confusion_matrix
from ..io import atomic_write_text
from ..models.heads import Classifier


@dataclass
class LoRAOptions:
    """task.lora: adapters on the backbone's linear layers (mode lora)."""

    rank: int = 8
    alpha: float = 16.0  # update scaled by alpha / rank
    dropout: float = 0.0
    targets: list[str] = field(default_factory=list)  # module-name patterns; [] = every nn.Linear
    merge: bool = True  # after training, write RUN/merged: a plain run with the adapters folded in


@dataclass
class ClassifyOptions:
    """config.task for classification runs."""

    data: str = ""  # folder with train / dev (or val) / test files, or the training file
    dev: str = ""  # dev file (default: the folder's; else dev_fraction of train is held out)
    test: str = ""  # test file (default: the folder's)
    dev_fraction: float = 0.1
    text_field: str = ""  # "" = `sentence`, else `text`
    label_field: str = "label"
    labels: list[str] = field(default_factory=list)  # class order; [] = sorted training labels
    empty: str = "skip"  # empty texts: skip (counted) | error
    max_len: int = 0  # tokens kept per text; 0 = model.max_len
    truncate: str = "end"  # end: keep the first max_len tokens | start: keep the last (Keras)
    padding: str = "right"  # right | left: where batches pad (results are identical either way)
    add_special: bool = False  # wrap texts in the tokenizer's <bos>/<eos> or [CLS]/[SEP]
    bucket: bool = True  # batch texts of similar length together (less padding)
    epochs: int = 10  # 0 = train.max_steps / train.eval_every as given
    mode: str = "full"  # full | frozen (head only) | lora (adapters + head)
    lora: LoRAOptions = field(default_factory=LoRAOptions)
    base: str = ""  # a pretrained lmforge run: its tokenizer, architecture and backbone weights
    vectors: str = ""  # GloVe / word2vec text file to initialise the token embedding
    freeze_vectors: bool = False
    class_weights: Any = ""  # "" | balanced | a list with one weight per class
    binary_head: bool = False  # two classes as one sigmoid logit + binary cross-entropy (Keras)
    init: str = "default"  # default (torch / lmforge) | keras (glorot, orthogonal, forget bias 1)
    eval_batch_size: int = 256

    def validate(self) -> None:
        checks = {"mode": ("full", "frozen", "lora"), "truncate": ("end", "start"),
                  "padding": ("right", "left"), "empty": ("skip", "error"),
                  "init": ("default", "keras")}
        for name, valid in checks.items():
            if getattr(self, name) not in valid:
                raise ConfigError(f"task.{name}={getattr(self, name)!r} must be one of {', '.join(valid)}")
        if self.epochs < 0 or self.max_len < 0:
            raise ConfigError("task.epochs and task.max_len must be >= 0")


def parse_options(task: dict[str, Any], source: str = "config") -> ClassifyOptions:
    """config.task -> ClassifyOptions, unknown keys named with a suggestion."""
    opts = _from_dict(ClassifyOptions, task, prefix="task", source=source)
    opts.validate()
    return opts


# --------------------------------------------------------------------------- the task


class ClassificationTask:
    """Shuffled, length-bucketed training batches; full-pass dev evaluation each epoch.

    `batch_tokens` counts examples, so the trainer's throughput column (`tokens_per_s`) is
    examples/s, and `flops_per_unit` is the training FLOPs of one example (see
    `flops_per_example`), which keeps the mfu column a true model-FLOPs utilisation. Under
    torchrun the training batches are each rank's slice of a global batch (`LabelledBatches`
    with rank / world_size): their `Share` reweights the rank's mean loss so that DDP's
    averaged gradient is the global batch's.
    """

    metric_names = ["accuracy", "macro_f1"]
    monitor = ("accuracy", "max")
    keep_best = True

    def __init__(self, model: Classifier, train: LabelledBatches, dev: LabelledBatches,
                 label_names: list[str]) -> None:
        self.model, self.train, self.dev, self.label_names = model, train, dev, label_names
        self.flops_per_unit = flops_per_example(model, train.lengths)

    def next_batch(self) -> tuple[Any, ...]:
        return self.train.next()

    def batch_tokens(self, batch: tuple[Any, ...]) -> float:
        """Examples in this rank's part of the batch (the global batch / world size under DDP,
        so that the trainer's count times the world size is exact for a ragged batch too)."""
        if len(batch) > 3:
            return batch[3].examples / self.train.world_size
        return int(batch[0].shape[0])

    def loss(self, batch: tuple[Any, ...], model: nn.Module | None = None) -> torch.Tensor:
        ids, mask, labels = batch[:3]  # (B, T), (B, T), (B,)
        loss = (self.model if model is None else model)(ids, labels, mask=mask)[1]
        if len(batch) > 3:  # a rank's slice of a global batch: its share of the global mean
            loss = loss * batch[3].weight
        return loss

    def evaluate(self) -> dict[str, float]:
        probs, loss = predict_batches(self.model, self.dev)
        gold = self.dev.labels
        report = classification_report(gold, probs.argmax(1), labels=list(range(len(self.label_names))))
        return {"loss": loss, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train.load_state_dict(state["train"])


def flops_per_example(model: Classifier, lengths: np.ndarray) -> float:
    """Training FLOPs (forward + backward) of one example, averaged over texts of `lengths`.

    The backbone runs once per token: each weight multiplying an activation costs 2 FLOPs
    forward, 2 more backward when gradients flow through it (any backbone weight trains) and
    2 more for its own gradient when it trains, so 6N in `full` mode, 4N for LoRA's frozen
    weights, 2N in `frozen` mode; lookup-only embedding tables cost nothing (train/mfu.py's
    rules). Attention adds 4dL per token forward (QK^T, AV) and twice that backward, over
    the example's own length L, hence the mean of L^2. The head runs once per example, on
    the pooled vector. Padding is not counted: compute spent on it is waste, not model FLOPs.
    """
    from ..train import mfu as mfu_lib

    L = np.asarray(lengths, dtype=np.float64)  # (N,) tokens per example
    skip = {id(p) for p in mfu_lib.lookup_only_embeddings(model.backbone)}
    params = {id(p): p for p in model.backbone.parameters() if id(p) not in skip}.values()
    through = any(p.requires_grad for p in params)  # backward runs through the backbone
    per_token = sum(p.numel() * (2 + 2 * through + 2 * p.requires_grad) for p in params)
    per_token_sq = sum(4 * d * (1 + 2 * through) for d, _ in mfu_lib.attention_widths(model.backbone))
    head = sum(p.numel() * (2 + 2 * through + 2 * p.requires_grad) for p in model.head.parameters())
    return float(per_token * L.mean() + per_token_sq * (L ** 2).mean() + head)


@torch.no_grad()
def predict_batches(model: Classifier, batches: LabelledBatches) -> tuple[np.ndarray, float]:
    """Class probabilities (N, K) in the split's original row order, and the mean loss (nan
    without labels)."""
    was_training = model.training
    model.eval()
    probs = np.zeros((batches.n_examples, model.n_classes), dtype=np.float32)
    total, n = 0.0, 0
    for rows, batch in batches:
        ids, mask = batch[0], batch[1]
        labels = batch[2] if len(batch) > 2 else None
        logits, loss = model(ids, labels, mask=mask)
        probs[rows] = model.probabilities(logits).cpu().numpy()
        if loss is not None:
            total += loss.item() * len(rows)
            n += len(rows)
    model.train(was_training)
    return probs, (total / n if n else float("nan"))


# --------------------------------------------------------------------------- reports


def clean_cell(text: str) -> str:
    """One TSV cell: tabs and line breaks become spaces."""
    return " ".join(str(text).split())


def write_evaluation(out_dir: str | Path, report: dict[str, Any], texts: Sequence[str],
                     gold: Sequence[str], probs: np.ndarray, label_names: list[str]) -> Path:
    """scores.json, confusion.png and predictions.tsv (one row per example) in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "scores.json", json.dumps(report, indent=2) + "\n")
    plot_confusion_matrix(report["confusion"], label_names, out_dir / "confusion.png",
                          title=f"Confusion matrix ({report.get('data', '')})")
    pred = probs.argmax(1)
    lines = ["text\tlabel\tpredicted\tprobability\tcorrect"]
    for text, g, p, row in zip(texts, gold, pred, probs):
        name = label_names[p]
        lines.append(f"{clean_cell(text)}\t{g}\t{name}\t{row[p]:.6f}\t{int(name == g)}")
    atomic_write_text(out_dir / "predictions.tsv", "\n".join(lines) + "\n")
    return out_dir


def format_report(report: dict[str, Any]) -> str:
    """Accuracy, macro-F1 and per-class precision / recall / F1 as a small table."""
    lines = [f"{report.get('data', 'data')}: {report['n']} examples | accuracy "
             f"{report['accuracy']:.4f} | macro-F1 {report['macro_f1']:.4f}",
             f"  {'class':<16} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for name, row in report["per_class"].items():
        lines.append(f"  {name[:16]:<16} {row['precision']:>9.4f} {row['recall']:>9.4f} "
                     f"{row['f1']:>9.4f} {row['support']:>8d}")
    return "\n".join(lines)


def score(probs: np.ndarray, gold_ids: np.ndarray, labels: LabelMap, data: str) -> dict[str, Any]:
    """classification_report over class ids, keyed by label names."""
    report = classification_report(gold_ids.tolist(), probs.argmax(1).tolist(),
                                   labels=list(range(len(labels))), label_names=labels.names)
    report["labels"] = labels.names
    report["data"] = data
    return report
