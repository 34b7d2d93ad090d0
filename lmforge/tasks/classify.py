"""Text classification (sentiment analysis and the like): fine-tune, evaluate, predict.

    lmforge finetune classify --data data/sst2 --config configs/sentiment-lstm.yaml --out runs/sst-lstm
    lmforge finetune classify --base runs/s1 --data reviews.csv --text-field review --label-field stars --lora.rank 8
    torchrun --standalone --nproc_per_node 2 -m lmforge finetune classify --data data/sst2 --out runs/sst-ddp
    lmforge evaluate runs/sst-lstm --data data/sst2/test.tsv
    lmforge predict runs/sst-lstm "a gripping, beautifully acted film" "two hours I will not get back"

Python: `finetune(data, config=..., base=..., out=..., **task_options) -> run dir`,
`TextClassifier.load(run_dir).predict(texts)`, `.evaluate(path)`.

A model is a backbone (trained from scratch with a word-level or any lmforge tokenizer, or a
pretrained lmforge run given by `base`) under the `Classifier` head. Modes: `full` trains
everything, `frozen` only the head, `lora` only low-rank adapters and the head. Training
counts epochs: it evaluates on the dev set after each one, keeps the best weights
(best.safetensors) by dev accuracy, stops after `train.patience` epochs without
improvement, and finally scores dev and test with the best weights into RUN/eval/.
Every option lives in config.yaml's `task:` section (see `ClassifyOptions`).
Under torchrun each rank trains on its slice of every global batch and rank 0 alone
evaluates and writes (docs/scale.md, "Classification under torchrun").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from ..config import (Config, ConfigError, ModelConfig, _from_dict, apply_overrides,
                      config_from_dict, read_yaml, save_config)
from ..data.labelled import (LABELS_FILE, LabelledBatches, LabelledSplit, LabelMap, class_weights,
                             encode_texts, evaluation_file, read_labelled, resolve_splits, split_off,
                             unknown_fraction, warn_if_one_class)
from ..eval.metrics import classification_report, plot_confusion_matrix
from ..models.build import build_backbone, count_parameters
from ..models.heads import Classifier
from ..nn.lora import lora_options, mark_only_lora_and_head_trainable, merge_lora
from ..run import CONFIG, MODEL_CONFIG, TOKENIZER, Run, load_run, read_model_config
from ..train.checkpoint import (BEST_WEIGHTS, TRAINER_STATE, WEIGHTS, atomic_write_text,
                                load_weights, save_weights)
from ..train import distributed
from ..train.loop import Trainer, pick_device

T = TypeVar("T")

# backbones whose positions are learned up to model.max_len: texts may not be longer
POSITIONAL_ARCHS = ("gpt", "bert")
MAX_UNKNOWN = 0.5  # a base tokenizer turning more than this share of tokens into <unk> is refused

# from-scratch defaults when no --config is given (a YAML recipe overrides any of them)
DEFAULTS: dict[str, Any] = {
    "out": "runs/classify",
    "model": {"arch": "lstm", "head": "classifier", "d_model": 128, "d_embed": 128, "n_layers": 1,
              "bidirectional": True, "pooling": "max", "dropout": 0.3, "max_len": 128},
    "tokenizer": {"kind": "word", "vocab_size": 20000, "lowercase": True},
    "train": {"batch_size": 32, "optimizer": "adamw", "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 0,
              "schedule": "linear", "weight_decay": 0.01, "patience": 3, "log_every": 50},
}


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


# --------------------------------------------------------------------------- prediction


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


# --------------------------------------------------------------------------- building the model


def keras_init(model: nn.Module) -> None:
    """Keras's default initialisers, for faithful reproductions of Keras recipes.

    Embedding U(-0.05, 0.05); Dense and RNN input kernels Glorot-uniform; recurrent kernels
    orthogonal; biases zero, except the LSTM forget gate at 1 (`unit_forget_bias`).
    """
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -0.05, 0.05)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RNNBase):
            H = module.hidden_size
            for name, p in module.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)  # Keras kernel (I, G*H): same fans
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(p)
                else:
                    nn.init.zeros_(p)
                    if isinstance(module, nn.LSTM) and name.startswith("bias_ih"):
                        p.data[H: 2 * H] = 1.0  # torch gate order i, f, g, o


def load_base_backbone(backbone: nn.Module, base: Path) -> int:
    """Copy a pretrained run's `backbone.*` weights into `backbone` (its head is dropped)."""
    from safetensors.torch import load_file

    path = base / BEST_WEIGHTS if (base / BEST_WEIGHTS).is_file() else base / WEIGHTS
    if not path.is_file():
        raise ConfigError(f"--base {base}: no weights ({WEIGHTS})")
    state = {k[len("backbone."):]: v for k, v in load_file(str(path)).items()
             if k.startswith("backbone.")}
    own = backbone.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            raise ConfigError(f"{path}: {name} has shape {tuple(tensor.shape)}, the backbone "
                              f"expects {tuple(own[name].shape)}")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{path}: backbone weights do not fit (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    return len(state)


def base_model_config(base: Path, user_model: dict[str, Any]) -> ModelConfig:
    """The base run's architecture as a classifier; only head settings may be changed."""
    cfg = read_model_config(base)
    if cfg.extra.get("lora"):
        raise ConfigError(f"--base {base} has LoRA adapters; use its merged run ({base}/merged)")
    data = dataclasses.asdict(cfg)
    head_keys = {"head", "n_classes", "pooling", "dropout", "extra", "max_len"}
    for key, value in user_model.items():
        if key in head_keys:
            data[key] = {**data["extra"], **value} if key == "extra" else value
        elif key in data and ModelConfig.from_dict({key: value}).__dict__[key] != data[key]:
            raise ConfigError(f"model.{key}={value!r} differs from the base run's {data[key]!r}; "
                              f"fine-tuning --base {base} keeps its architecture")
    if data["arch"] in POSITIONAL_ARCHS and data["max_len"] > cfg.max_len:
        raise ConfigError(f"model.max_len={data['max_len']} exceeds the base run's {cfg.max_len} positions")
    if cfg.head == "causal_lm" and data["arch"] in ("cnn", "rcnn"):
        data["extra"] = {**data["extra"], "causal": True}  # keep the pretrained causal layout
    data["head"] = "classifier"
    return ModelConfig.from_dict(data, source=str(base / MODEL_CONFIG))


def prepare_tokenizer(cfg: Config, texts: list[str], log: Callable) -> Any:
    """The tokenizer a from-scratch model uses: a given tokenizer.json, or one trained on `texts`."""
    from ..tokenizers import load_tokenizer, train_tokenizer

    tc = cfg.tokenizer
    if tc.path:
        return load_tokenizer(tc.path)
    if tc.kind not in ("char", "word", "bpe", "wordpiece"):
        if Path(tc.kind).exists():
            return load_tokenizer(tc.kind)
        raise ConfigError(f"tokenizer.kind={tc.kind!r} is not char, word, bpe, wordpiece "
                          "or a path to a tokenizer.json")
    tok = train_tokenizer(tc.kind, texts, vocab_size=tc.vocab_size, lowercase=tc.lowercase,
                          min_frequency=tc.min_frequency)
    log(f"trained a {tc.kind} tokenizer on the training texts: {tok.vocab_size} tokens")
    return tok


# --------------------------------------------------------------------------- config resolution


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def resolve_config(config: str | Path | Config | dict | None, task_options: dict[str, Any],
                   out: str | Path | None, overrides: list[str]) -> tuple[Config, dict[str, Any], bool]:
    """DEFAULTS <- recipe <- task options / out <- dotted overrides; returns (config, raw user
    model section, whether the user set train.max_steps). With a base run the model section is
    the base's (see base_model_config)."""
    if isinstance(config, Config):
        user = config.to_dict()
    elif isinstance(config, dict):
        user = dict(config)
    else:
        user = read_yaml(config) if config else {}
    user = _merge(user, {"task": task_options})
    if out:
        user["out"] = str(out)
    apply_overrides(user, overrides)
    source = str(config) if isinstance(config, (str, Path)) else "finetune options"
    base = user.get("task", {}).get("base")
    data = _merge(DEFAULTS, user)
    if base:  # the base run decides the architecture and tokenizer: no from-scratch defaults
        data["model"] = {}
        data.pop("tokenizer", None)
    steps_given = "max_steps" in (user.get("train") or {})
    return config_from_dict(data, source=source), dict(user.get("model", {})), steps_given


# --------------------------------------------------------------------------- fine-tuning


def _splits(opts: ClassifyOptions, seed: int, log: Callable,
            warn: bool = True) -> dict[str, LabelledSplit | None]:
    if not opts.data:
        raise ConfigError("no training data: pass --data (a folder with train/dev/test or a file)")
    files = resolve_splits(opts.data, opts.dev or None, opts.test or None)
    read = lambda p: read_labelled(p, opts.text_field or None, opts.label_field, opts.empty)  # noqa: E731
    splits: dict[str, LabelledSplit | None] = {"train": read(files["train"])}
    for name in ("dev", "test"):
        splits[name] = read(files[name]) if files[name] else None
    if splits["dev"] is None:
        splits["train"], splits["dev"] = split_off(splits["train"], opts.dev_fraction, seed)
        log(f"no dev file: holding out {len(splits['dev'])} of the training examples as dev")
    for name, split in splits.items():
        if split is not None and split.skipped_empty:
            log(f"{split.path}: skipped {split.skipped_empty} rows with empty text")
    if warn:
        warn_if_one_class(splits["train"])
    return splits


def _from_rank0(fn: Callable[[], T], info: distributed.DistInfo) -> T:
    """`fn()` run by rank 0 alone; every rank gets its result, or raises its error (so that a
    bad --base or run directory stops the whole job instead of leaving ranks waiting)."""
    if not info.enabled:
        return fn()
    result, error = None, None
    if info.rank == 0:
        try:
            result = fn()
        except Exception as err:  # re-raised below, on every rank
            error = err
    result, error = distributed.broadcast_object((result, error))
    if error is not None:
        raise error
    return result


def finetune(data: str | Path | None = None, *, config: str | Path | Config | dict | None = None,
             base: str | Path | None = None, out: str | Path | None = None,
             overrides: list[str] | None = None, resume: str | Path | None = None,
             log: Callable[[str], Any] = print, **task_options: Any) -> Path:
    """Fine-tune a text classifier; returns the run directory.

    Under torchrun every rank calls this: each reads the data files, rank 0 alone prepares
    the tokenizer, label map and base weights (broadcast to the others), logs and writes the
    run directory; each rank trains on its slice of every global batch of
    train.batch_size x world size examples (see `LabelledBatches`).

    Args:
        data: folder with train / dev (or val) / test files, or a training file.
        config: a YAML recipe (or Config / dict); defaults are a BiLSTM over word tokens.
        base: a pretrained lmforge run to start from (tokenizer, architecture, weights).
        out: the run directory; overrides: dotted `key=value` strings.
        resume: continue the run in this directory (its config.yaml, plus overrides).
        task_options: any `ClassifyOptions` field, e.g. epochs=3, mode="lora", lora={"rank": 8}.
    """
    from ..tokenizers import Tokenizer, load_tokenizer

    overrides = list(overrides or [])
    if data is not None:
        task_options["data"] = str(data)
    if base is not None:
        task_options["base"] = str(base)
    if resume:
        resume = Path(resume)
        if not (resume / CONFIG).is_file():  # every rank reads config.yaml (as pretraining)
            missing = TRAINER_STATE if not (resume / TRAINER_STATE).is_file() else CONFIG
            raise ConfigError(f"--resume {resume}: no {missing} there to resume from")
        cfg, user_model, _ = resolve_config(resume / CONFIG, task_options, resume, overrides)
        # config.yaml holds the max_steps its epochs came to: only an override limits further
        steps_given = any(o.strip().startswith("train.max_steps=") for o in overrides)
    else:
        cfg, user_model, steps_given = resolve_config(config, task_options, out, overrides)
    opts = parse_options(cfg.task)
    tcfg = cfg.train
    run_dir = Path(cfg.out)
    info = distributed.setup(tcfg.device)
    main = info.rank == 0
    log = log if main else _quiet  # one voice under torchrun

    def check_run_dir() -> ModelConfig | None:
        if resume:
            if not (run_dir / TRAINER_STATE).is_file():
                raise ConfigError(f"--resume {run_dir}: no {TRAINER_STATE} there to resume from")
            return read_model_config(run_dir)
        if (run_dir / TRAINER_STATE).exists():
            raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} "
                              "or choose another --out")
        return None

    saved_model = _from_rank0(check_run_dir, info)  # the run directory may be rank 0's alone
    if saved_model is not None:
        cfg.model = saved_model
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    device = distributed.device_for(info, pick_device(tcfg.device))
    base_dir = None
    if opts.base:  # an lmforge run, or a Hugging Face folder converted once (rank 0 first)
        from ..run import resolve_base

        with distributed.local_main_first():
            base_dir = resolve_base(opts.base, log=log if info.rank == 0 else (lambda *a: None))
    if base_dir is not None and not resume:
        def read_base() -> ModelConfig:
            if not base_dir.is_dir():
                raise ConfigError(f"--base {str(base_dir)!r} is not a run folder")
            return base_model_config(base_dir, user_model)

        cfg.model = _from_rank0(read_base, info)

    splits = _splits(opts, tcfg.seed, log, warn=main)  # every rank reads the data itself
    train, dev, test = splits["train"], splits["dev"], splits["test"]

    def prepare() -> tuple[list[str], Any]:
        """Label names and tokenizer (as JSON under torchrun): from the run, the base, or made."""
        labels = LabelMap.load(run_dir / LABELS_FILE) if resume else \
            LabelMap.fit(train.labels, opts.labels, train.path)
        if resume:
            tokenizer = load_tokenizer(run_dir / TOKENIZER)
        elif base_dir is not None:
            tokenizer = load_tokenizer(base_dir / TOKENIZER)
        else:
            tokenizer = prepare_tokenizer(cfg, train.texts, log)
        return labels.names, tokenizer.to_json() if info.enabled else tokenizer

    label_names, tokenizer = _from_rank0(prepare, info)
    labels = LabelMap(label_names)
    if info.enabled:
        tokenizer = Tokenizer.from_json(tokenizer)
    max_len = opts.max_len or cfg.model.max_len
    if cfg.model.arch in POSITIONAL_ARCHS and max_len > cfg.model.max_len:
        raise ConfigError(f"task.max_len={max_len} exceeds model.max_len={cfg.model.max_len} "
                          f"({cfg.model.arch} has that many positions)")
    encoded = {}
    for name, split in splits.items():
        if split is None:
            continue
        ids, cut = encode_texts(tokenizer, split.texts, max_len, opts.truncate, opts.add_special)
        encoded[name] = (ids, labels.encode(split.labels, split.path))
        if cut:
            log(f"{split.path}: {cut} of {len(split)} texts truncated to {max_len} tokens")
    if base_dir is not None:
        frac = unknown_fraction(tokenizer, encoded["train"][0])
        if frac > MAX_UNKNOWN:
            raise ConfigError(f"base run's tokenizer does not match the data: {frac:.0%} of the "
                              f"tokens of {train.path} are <unk> under {base_dir / TOKENIZER}")

    # the model config records everything needed to rebuild the model (LoRA included)
    m = cfg.model
    if not resume:
        m.head, m.n_classes, m.vocab_size = "classifier", len(labels), tokenizer.vocab_size
        if tokenizer.pad_id is not None:
            m.pad_id = tokenizer.pad_id
        extra = dict(m.extra)
        if opts.binary_head:
            if len(labels) != 2:
                raise ConfigError(f"task.binary_head needs two classes, the data has {len(labels)}")
            extra["binary_head"] = True
        if opts.class_weights:
            cw = opts.class_weights
            extra["class_weights"] = class_weights(encoded["train"][1], len(labels)) \
                if cw == "balanced" else [float(w) for w in (cw.split(",") if isinstance(cw, str) else cw)]
        if opts.mode == "lora":
            extra["lora"] = lora_options(dataclasses.asdict(opts.lora))
        m.extra = extra
    cfg.task = dataclasses.asdict(opts)
    if opts.init == "keras" and base_dir is not None and not resume:
        raise ConfigError("task.init=keras re-initialises the model; it cannot be used with --base")

    torch.manual_seed(tcfg.seed)  # the same initial weights on every rank
    backbone = build_backbone(m)
    if not resume and opts.init == "keras":
        keras_init(backbone)

    def load_pretrained() -> list[str]:
        """Base backbone weights and word vectors, read by rank 0 (broadcast below)."""
        notes = []
        if base_dir is not None:
            n = load_base_backbone(backbone, base_dir)
            notes.append(f"loaded {n} backbone tensors from {base_dir} (its LM head is dropped)")
        if opts.vectors:
            from ..convert.vectors import load_into_embedding

            rep = load_into_embedding(backbone.embed, opts.vectors, tokenizer.get_vocab(),
                                      freeze=opts.freeze_vectors, seed=tcfg.seed)
            notes.append(f"word vectors {opts.vectors}: {rep['coverage']:.1%} of the vocabulary covered")
        return notes

    if not resume:
        for note in _from_rank0(load_pretrained, info):
            log(note)
    model = Classifier(backbone, m)
    if opts.init == "keras" and not resume:
        keras_init(model.head)
    model.to(device)
    distributed.broadcast_module(model)  # rank 0's base / vector weights on every rank
    if opts.mode == "frozen":
        model.backbone.requires_grad_(False)
    elif opts.mode == "lora":
        mark_only_lora_and_head_trainable(model)
    if opts.freeze_vectors:
        model.backbone.embed.weight.requires_grad_(False)

    pad = tokenizer.pad_id or 0
    train_b = LabelledBatches(*encoded["train"], tcfg.batch_size, pad, shuffle=True, bucket=opts.bucket,
                              seed=tcfg.seed, padding=opts.padding, device=device,
                              rank=info.rank, world_size=info.world_size,
                              class_weights=m.extra.get("class_weights"))
    dev_b = LabelledBatches(*encoded["dev"], opts.eval_batch_size, pad, shuffle=False,
                            padding=opts.padding, device=device)
    steps_per_epoch = len(train_b)  # global batches per epoch: the same on every rank
    if opts.epochs:
        epoch_steps = opts.epochs * steps_per_epoch // tcfg.grad_accum
        if steps_given and tcfg.max_steps < epoch_steps:  # whichever limit comes first stops
            log(f"train.max_steps={tcfg.max_steps} stops training before task.epochs="
                f"{opts.epochs} ({epoch_steps} steps)")
        tcfg.max_steps = min(tcfg.max_steps, epoch_steps) if steps_given else epoch_steps
        tcfg.eval_every = max(1, steps_per_epoch // tcfg.grad_accum)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG)
        atomic_write_text(run_dir / MODEL_CONFIG, m.to_json())
        if not resume:
            tokenizer.save(run_dir / TOKENIZER)
            labels.save(run_dir / LABELS_FILE)
    n_train = count_parameters(model, trainable_only=True)
    per_step = tcfg.batch_size * tcfg.grad_accum * info.world_size
    log(f"{m.arch} classifier ({opts.mode}): {count_parameters(model) / 1e6:.2f}M parameters, "
        f"{n_train / 1e6:.3f}M trainable | {len(labels)} classes {labels.names[:6]} | train "
        f"{train_b.n_examples} / dev {dev_b.n_examples} examples | {steps_per_epoch} batches per "
        f"epoch | {per_step:,} examples per step (batch {tcfg.batch_size} x accum "
        f"{tcfg.grad_accum} x world {info.world_size}) | device {device}")
    task = ClassificationTask(model, train_b, dev_b, labels.names)
    trainer = Trainer(task, tcfg, run_dir, resume=bool(resume), log=log)
    t0 = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t0
    if not main:
        return run_dir  # rank 0 alone scores and writes the final reports

    # final scores with the best weights
    if distributed.is_fsdp(model):  # sharded: score a plain copy (no collectives on rank 0 alone)
        model = Classifier(build_backbone(m), m).to(device)
        load_weights(model, run_dir / WEIGHTS)
    if (run_dir / BEST_WEIGHTS).is_file():
        load_weights(model, run_dir / BEST_WEIGHTS)
    epochs_done = trainer.step * tcfg.grad_accum / steps_per_epoch
    summary: dict[str, Any] = {
        "steps": trainer.step, "epochs": epochs_done, "train_seconds": trainer.elapsed,
        "wall_seconds": wall,  # this call only (a resumed run's earlier part not included)
        "samples_per_s": epochs_done * train_b.n_examples / max(trainer.elapsed, 1e-9),
        "world_size": info.world_size,
    }
    for name, split in (("dev", dev), ("test", test)):
        if split is None:
            continue
        batches = dev_b if name == "dev" else LabelledBatches(
            *encoded["test"], opts.eval_batch_size, pad, shuffle=False, device=device)
        probs, _ = predict_batches(model, batches)
        report = score(probs, encoded[name][1], labels, str(split.path))
        write_evaluation(run_dir / "eval" / name, report, split.texts, split.labels, probs, labels.names)
        summary[name] = {k: report[k] for k in ("accuracy", "macro_f1", "n")}
        log(format_report(report))
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if opts.mode == "lora" and opts.lora.merge:
        merged = export_merged(run_dir, run_dir / "merged")
        log(f"LoRA adapters merged into a plain run: {merged}")
    return run_dir


def _quiet(*args: Any, **kwargs: Any) -> None:
    pass


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


# --------------------------------------------------------------------------- command line


def finetune_cli(argv: list[str]) -> int:
    """lmforge finetune classify --data PATH [--config FILE] [--base RUN] [options] [key=value ...]"""
    p = argparse.ArgumentParser(
        prog="lmforge finetune classify",
        description="Fine-tune a text classifier (sentiment analysis, topics, ...). Trailing "
                    "key=value pairs override the config, e.g. train.lr=3e-4 task.epochs=5.")
    p.add_argument("--data", help="folder with train/dev(val)/test files, or a training file")
    p.add_argument("--config", help="YAML recipe (see configs/sentiment-*.yaml)")
    p.add_argument("--base", help="pretrained lmforge run to fine-tune")
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    p.add_argument("--dev", help="dev file (default: the folder's dev/val file)")
    p.add_argument("--test", help="test file scored at the end (default: the folder's)")
    p.add_argument("--text-field", help="text column / key (default: sentence, else text)")
    p.add_argument("--label-field", help="label column / key (default: label)")
    p.add_argument("--labels", help="comma-separated class order (default: sorted labels)")
    p.add_argument("--max-len", type=int, help="tokens kept per text")
    p.add_argument("--epochs", type=int)
    p.add_argument("--mode", choices=["full", "frozen", "lora"])
    p.add_argument("--lora.rank", dest="lora_rank", type=int)
    p.add_argument("--lora.alpha", dest="lora_alpha", type=float)
    p.add_argument("--lora.dropout", dest="lora_dropout", type=float)
    p.add_argument("--lora.targets", dest="lora_targets", help="comma-separated module patterns")
    p.add_argument("--no-merge", action="store_true", help="LoRA: do not write RUN/merged")
    p.add_argument("--vectors", help="GloVe/word2vec text vectors for the embedding")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_intermixed_args(argv)  # key=value overrides may sit between options
    options: dict[str, Any] = {}
    for key in ("dev", "test", "text_field", "label_field", "max_len", "epochs", "mode", "vectors"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.labels:
        options["labels"] = [s.strip() for s in args.labels.split(",")]
    lora = {k: getattr(args, f"lora_{k}") for k in ("rank", "alpha", "dropout", "targets")
            if getattr(args, f"lora_{k}") is not None}
    if "targets" in lora:
        lora["targets"] = [s.strip() for s in lora["targets"].split(",") if s.strip()]
    if args.no_merge:
        lora["merge"] = False
    if lora:
        options["lora"] = lora
        options.setdefault("mode", "lora")
    if not args.resume and not args.data:
        p.error("--data is required (or --resume RUN)")
    with warnings.catch_warnings():
        # one line per warning on the command line, not Python's file:line + source echo
        warnings.showwarning = lambda message, *a, **k: print(f"lmforge: warning: {message}",
                                                             file=sys.stderr)
        try:
            finetune(args.data, config=args.config, base=args.base, out=args.out,
                     overrides=args.overrides, resume=args.resume, **options)
        finally:
            distributed.cleanup()  # under torchrun: leave the process group cleanly
    return 0


def evaluate_cli(argv: list[str]) -> int:
    """lmforge evaluate RUN --data PATH: accuracy, macro-F1, per-class scores, confusion matrix."""
    p = argparse.ArgumentParser(prog="lmforge evaluate",
                                description="Score a classifier run on a labelled file or folder.")
    p.add_argument("run", help="classifier run directory")
    p.add_argument("--data", required=True, help="labelled file, or a folder (its test file)")
    p.add_argument("--text-field")
    p.add_argument("--label-field")
    p.add_argument("--out", help="folder for scores.json, confusion.png, predictions.tsv "
                                 "(default RUN/eval/<file name>)")
    p.add_argument("--weights", choices=["best", "last"], default="best")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    clf = TextClassifier.load(args.run, device=args.device, weights=args.weights)
    path = evaluation_file(args.data)
    out = Path(args.out) if args.out else Path(args.run) / "eval" / path.stem
    report = clf.evaluate(path, args.text_field, args.label_field, out_dir=out)
    print(format_report(report))
    print(f"wrote {out / 'scores.json'}, {out / 'confusion.png'}, {out / 'predictions.tsv'}")
    return 0


def predict_cli(argv: list[str]) -> int:
    """lmforge predict RUN TEXT... : the label and its probability for each text."""
    p = argparse.ArgumentParser(prog="lmforge predict", description="Classify texts with a classifier run.")
    p.add_argument("run", help="classifier run directory")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--file", help="classify each line of this file (- = stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object per text, all probabilities")
    p.add_argument("--device", default="auto")
    args = p.parse_intermixed_args(argv)  # texts and options in any order
    texts = list(args.texts)
    if args.file:
        lines = sys.stdin.read().splitlines() if args.file == "-" else \
            Path(args.file).read_text(encoding="utf-8").splitlines()
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
