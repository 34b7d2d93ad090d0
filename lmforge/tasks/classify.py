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
improvement, and finally scores dev and test with the best weights into RUN/eval/. Options:
config.yaml's `task:` section (`ClassifyOptions`). Under torchrun each rank trains on its
slice of every global batch; rank 0 alone evaluates and writes (docs/scale.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import (
    Config,
    ConfigError,
    ModelConfig,
    apply_overrides,
    config_from_dict,
    read_yaml,
)
from ..data.labelled import (
    LABELS_FILE,
    LabelledBatches,
    LabelledSplit,
    LabelMap,
    class_weights,
    encode_texts,
    read_labelled,
    resolve_splits,
    split_off,
    unknown_fraction,
    warn_if_one_class,
)
from ..models.build import build_backbone, count_parameters
from ..models.heads import Classifier
from ..models.registry import backbone_spec
from ..nn.lora import lora_options, mark_only_lora_and_head_trainable
from ..recipes.scaffold import RunDir, prepare_tokenizer, validate_config
from ..run import CONFIG, TOKENIZER, read_model_config, weights_path
from ..train import distributed
from ..train.checkpoint import TRAINER_STATE, WEIGHTS, atomic_write_text, load_weights
from ..train.loop import Trainer
from ..train.runtime import pick_device

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


from .classify_infer import TextClassifier, evaluate_cli, export_merged, predict_cli
from .classify_model import base_model_config, keras_init, load_base_backbone
from .llm_recipe import lora_from_args
from .classify_task import (
    ClassificationTask,
    ClassifyOptions,
    LoRAOptions,
    flops_per_example,
    format_report,
    parse_options,
    predict_batches,
    score,
    write_evaluation,
)

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
    validate_config(cfg)  # the whole config, before anything is created
    run_dir = Path(cfg.out)
    info = distributed.setup(cfg.train.device)
    log = log if info.rank == 0 else _quiet  # one voice under torchrun
    with RunDir(run_dir, resume=bool(resume)) as run:
        if resume:  # the run directory may be rank 0's alone
            cfg.model = distributed.from_rank0(lambda: read_model_config(run_dir))
        return _finetune_in(run, cfg, opts, user_model, info, log, steps_given)


def _finetune_in(run: RunDir, cfg: Config, opts: ClassifyOptions, user_model: dict[str, Any],
                 info: distributed.DistInfo, log: Callable[[str], Any], steps_given: bool) -> Path:
    """The classification recipe proper, inside the run directory's scaffold;
    `steps_given`: the user set train.max_steps (it stops training if before task.epochs)."""
    from ..tokenizers import Tokenizer, load_tokenizer

    tcfg, run_dir, resume, main = cfg.train, run.path, run.resume, info.rank == 0
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    device = distributed.device_for(info, pick_device(tcfg.device))
    base_dir = None
    if opts.base:  # an lmforge run, or a Hugging Face folder converted once (rank 0 first)
        from ..convert.cli import resolve_base

        with distributed.local_main_first():
            base_dir = resolve_base(opts.base, log=log if info.rank == 0 else (lambda *a: None))
    if base_dir is not None and not resume:
        def read_base() -> ModelConfig:
            if not base_dir.is_dir():
                raise ConfigError(f"--base {str(base_dir)!r} is not a run folder")
            return base_model_config(base_dir, user_model)

        cfg.model = distributed.from_rank0(read_base)

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
            tokenizer = prepare_tokenizer(cfg, lambda: train.texts, log)
        return labels.names, tokenizer.to_json() if info.enabled else tokenizer

    label_names, tokenizer = distributed.from_rank0(prepare)
    labels = LabelMap(label_names)
    if info.enabled:
        tokenizer = Tokenizer.from_json(tokenizer)
    if base_dir is not None and not resume:  # the base's tokenizer may not know this text
        from ..tokenizers.unknown import warn_unknown

        warn_unknown(tokenizer, train.texts, "the training texts", log)
    max_len = opts.max_len or cfg.model.max_len
    if backbone_spec(cfg.model.arch).positional and max_len > cfg.model.max_len:
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
        for note in distributed.from_rank0(load_pretrained):
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
    n_train = count_parameters(model, trainable_only=True)
    per_step = tcfg.batch_size * tcfg.grad_accum * info.world_size
    log(f"{m.arch} classifier ({opts.mode}): {count_parameters(model) / 1e6:.2f}M parameters, "
        f"{n_train / 1e6:.3f}M trainable | {len(labels)} classes {labels.names[:6]} | train "
        f"{train_b.n_examples} / dev {dev_b.n_examples} examples | {steps_per_epoch} batches per "
        f"epoch | {per_step:,} examples per step (batch {tcfg.batch_size} x accum "
        f"{tcfg.grad_accum} x world {info.world_size}) | device {device}")
    task = ClassificationTask(model, train_b, dev_b, labels.names)
    trainer = run.start(task, cfg, log=log, tokenizer=tokenizer, trainer_cls=Trainer,
                        files={} if resume else {LABELS_FILE: labels.save})
    t0 = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t0
    if not main:
        return run_dir  # rank 0 alone scores and writes the final reports

    # final scores with the best weights
    if distributed.is_fsdp(model):  # sharded: score a plain copy (no collectives on rank 0 alone)
        model = Classifier(build_backbone(m), m).to(device)
        load_weights(model, run_dir / WEIGHTS)
    load_weights(model, weights_path(run_dir))  # best.safetensors when kept
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
    lora = lora_from_args(args)
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


__all__ = ["finetune", "finetune_cli", "export_merged", "resolve_config", "base_model_config",
           "load_base_backbone", "keras_init", "DEFAULTS", "ClassificationTask",  # + as before the split "ClassifyOptions", "LoRAOptions", "flops_per_example",
           "format_report", "parse_options", "predict_batches", "score", "write_evaluation",
           "TextClassifier", "evaluate_cli", "predict_cli"]
