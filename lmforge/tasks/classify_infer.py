"""A trained classifier: `TextClassifier`, and the `lmforge evaluate` / `lmforge predict` CLIs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import ConfigError, save_config
from ..outputs import eval_stem
from ..data.labelled import (
    LABELS_FILE,
    LabelledBatches,
    LabelMap,
    encode_texts,
    evaluation_file,
    read_labelled,
)
from ..io import atomic_write_text
from ..nn.lora import merge_lora
from ..run import CONFIG, MODEL_CONFIG, TOKENIZER, Run, load_run, read_model_config
from ..train.checkpoint import WEIGHTS, save_weights
from .classify_task import (
    ClassifyOptions,
    format_report,
    parse_options,
    predict_batches,
    score,
    write_evaluation,
)


class TextClassifier:
    """A classifier run ready to label texts: model, tokenizer, label names, truncation."""

    def __init__(self, run: Run, labels: LabelMap, options: ClassifyOptions) -> None:
        self.run, self.model, self.tokenizer, self.labels = run, run.model, run.tokenizer, labels
        self.options = options
        self.max_len = options.max_len or run.model_config.max_len

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", weights: str = "best") -> "TextClassifier":
        """Reload a classifier run (best weights by default)."""
        path = Path(path)
        if read_model_config(path).head != "classifier":
            raise ConfigError(f"{path}: not a classifier run (model.head is not classifier)")
        run = load_run(path, device=device, weights=weights)
        task = dict(run.config.task) if run.config is not None else {}
        for key in ("data", "dev", "test", "base", "vectors"):
            task.pop(key, None)  # paths of the training run: not needed here, may be gone
        return cls(run, LabelMap.load(path / LABELS_FILE), parse_options(task, str(path / CONFIG)))

    def batches(self, texts: Sequence[str], label_ids: np.ndarray | None = None) -> LabelledBatches:
        ids, _ = encode_texts(self.tokenizer, texts, self.max_len, self.options.truncate,
                              self.options.add_special)
        return LabelledBatches(ids, label_ids, self.options.eval_batch_size,
                               self.tokenizer.pad_id or 0, shuffle=False, device=self.run.device)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities (N, K), columns in `self.labels.names` order."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return predict_batches(self.model, self.batches(texts))[0]

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """[{"label", "probability", "probabilities": {name: p}}] for each text."""
        probs = self.predict_proba(texts)
        out = []
        for row in probs:
            k = int(row.argmax())
            out.append({"label": self.labels.names[k], "probability": float(row[k]),
                        "probabilities": dict(zip(self.labels.names, map(float, row)))})
        return out

    def evaluate(self, data: str | Path, text_field: str | None = None,
                 label_field: str | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
        """Score a labelled file (or a folder's test file); writes the report files to `out_dir`."""
        path = evaluation_file(data)
        split = read_labelled(path, text_field or self.options.text_field or None,
                              label_field or self.options.label_field, self.options.empty)
        gold_ids = self.labels.encode(split.labels, path)
        probs = predict_batches(self.model, self.batches(split.texts, gold_ids))[0]
        report = score(probs, gold_ids, self.labels, str(path))
        report["skipped_empty"] = split.skipped_empty
        if out_dir is not None:
            write_evaluation(out_dir, report, split.texts, split.labels, probs, self.labels.names)
        return report




def evaluate_cli(argv: list[str]) -> int:
    """lmforge evaluate RUN --data PATH: accuracy, macro-F1, per-class scores, confusion matrix."""
    p = argparse.ArgumentParser(prog="lmforge evaluate",
                                description="Score a classifier run on a labelled file or folder.")
    p.add_argument("run", help="classifier run directory")
    p.add_argument("--data", required=True, help="labelled file, or a folder (its test file)")
    p.add_argument("--split", help="with a folder: the split to score (test, dev, ...)")
    p.add_argument("--text-field")
    p.add_argument("--label-field")
    p.add_argument("--out", help="folder for scores.json, confusion.png, predictions.tsv "
                                 "(default RUN/eval/<file name>)")
    p.add_argument("--weights", choices=["best", "last"], default="best")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    clf = TextClassifier.load(args.run, device=args.device, weights=args.weights)
    path = evaluation_file(args.data, args.split)
    # RUN/eval/<dataset>-<split>: two data sets with a test split keep their own outputs
    dataset = args.data if Path(args.data).is_dir() else path.parent
    out = Path(args.out) if args.out else Path(args.run) / "eval" / eval_stem(dataset, path.stem)
    report = clf.evaluate(path, args.text_field, args.label_field, out_dir=out)
    print(format_report(report))
    print(f"wrote {out / 'scores.json'}, {out / 'confusion.png'}, {out / 'predictions.tsv'}")
    return 0


def _read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file; a missing or binary file is one error naming it."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"--file {path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"--file {path}: not UTF-8 text (byte {err.start}: {err.reason}); "
                          "give a text file, one input per line") from None
    except IsADirectoryError:
        raise ConfigError(f"--file {path} is a folder; give a text file, one input per line") from None


def predict_cli(argv: list[str]) -> int:
    """lmforge predict RUN TEXT... : the label and its probability for each text."""
    p = argparse.ArgumentParser(prog="lmforge predict", description="Classify texts with a classifier run.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  lmforge predict runs/sst \"a gripping, funny film\"\n"
                                       "  lmforge predict runs/sst --file reviews.txt --json | head")
    p.add_argument("run", help="classifier run directory")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--file", help="classify each line of this file (- = stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object per text, all probabilities")
    p.add_argument("--device", default="auto")
    args = p.parse_intermixed_args(argv)  # texts and options in any order
    texts = list(args.texts)
    if args.file:
        lines = sys.stdin.read().splitlines() if args.file == "-" else _read_lines(args.file)
        texts += [line for line in lines if line.strip()]
    if not texts:
        p.error("give texts to classify (or --file)")
    clf = TextClassifier.load(args.run, device=args.device)
    for text, pred in zip(texts, clf.predict(texts)):
        if args.json:
            print(json.dumps({"text": text, **pred}, ensure_ascii=False))
        else:
            print(f"{pred['label']}\t{pred['probability']:.4f}\t{text}")
    return 0


def export_merged(run_dir: str | Path, out: str | Path) -> Path:
    """Write a LoRA run's best weights with the adapters folded in as a plain run in `out`."""
    run_dir, out = Path(run_dir), Path(out)
    run = load_run(run_dir, device="cpu")
    model = merge_lora(run.model)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / WEIGHTS)
    atomic_write_text(out / MODEL_CONFIG, model.config.to_json())
    for name in (TOKENIZER, LABELS_FILE):
        shutil.copyfile(run_dir / name, out / name)
    if run.config is not None:
        cfg = dataclasses.replace(run.config, model=model.config, out=str(out))
        cfg.task = {**cfg.task, "mode": "full"}
        save_config(cfg, out / CONFIG)
    return out
