"""Extractive summarization: score the sentences of a document and select the best ones.

A summary is often "the key sentences". The model encodes every source sentence with any
lmforge backbone (GRU, LSTM, CNN, GPT, BERT, ...), pools it to one vector, adds the
sentence's position, reads the document's sentence vectors with a small bidirectional GRU
(document context) and gives each sentence a score; a softmax over the document's sentences
is trained towards the oracle: the sentence(s) with the highest ROUGE against the reference.

    lmforge finetune seq2seq --task summarize --data ../shared/data/scitldr \\
        --config configs/summarize-extractive.yaml --out runs/ext
    lmforge evaluate runs/ext --data ../shared/data/scitldr --split test      # ROUGE-1/2/L

    from lmforge.tasks.extractive import load_extractive
    load_extractive("runs/ext").summarize(["First sentence. Second one. Third."])

The run's model_config.json has head "extractive"; config.yaml's `task:` section holds
`ExtractiveOptions`. `task.base` starts the sentence encoder from a pretrained run's backbone.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import Config, ConfigError
from ..data.parallel import ParallelSplit, list_splits, read_split, split_off
from ..models.build import count_parameters
from ..models.extractive import SentenceScorer, build_extractive
from ..recipes.scaffold import RunDir, prepare_tokenizer, validate_config
from ..run import TOKENIZER, read_model_config, weights_path
from ..train.checkpoint import CheckpointError
from ..train.loop import Trainer
from ..train.runtime import pick_device
from .extractive_infer import ExtractiveRun, evaluate, evaluate_cli, load_extractive
from .extractive_task import (
    Documents,
    ExtractiveOptions,
    ExtractiveTask,
    collate_documents,
    lead,
    oracle,
    prepare_documents,
    select,
    split_sentences,
)

# --------------------------------------------------------------------------- fine-tuning


def _tokenizer_and_base(cfg: Config, opts: ExtractiveOptions, train: ParallelSplit, run_dir: Path,
                        resume: bool, log: Callable) -> tuple[Any, dict | None]:
    from ..tokenizers import load_tokenizer

    if resume:
        return load_tokenizer(run_dir / TOKENIZER), None
    if opts.base:
        from ..train.checkpoint import load_state

        base = Path(opts.base)
        base_cfg = read_model_config(base)
        keep = {f: getattr(cfg.model, f) for f in ("head", "pooling", "dropout", "extra")}
        cfg.model = dataclasses.replace(base_cfg, **keep)
        weights = weights_path(base)
        state = {k[len("backbone."):]: v for k, v in load_state(weights).items()
                 if k.startswith("backbone.")}
        log(f"sentence encoder starts from {base} ({base_cfg.arch}, {len(state)} tensors)")
        return load_tokenizer(base / TOKENIZER), state
    return prepare_tokenizer(cfg, lambda: train.sources + train.targets, log,
                             what=f"the {train.name} split"), None


def finetune(config: Config, resume: bool = False, log: Callable[[str], Any] = print) -> Path:
    """Train a sentence scorer (config.model.head == "extractive"); returns the run directory."""
    cfg = config
    opts = ExtractiveOptions.from_config(cfg)
    cfg.task = dataclasses.asdict(opts)
    if not cfg.data.path:
        raise ConfigError("no data: pass --data PATH (a folder of train.jsonl / val.jsonl or a .jsonl)")
    validate_config(cfg)  # the whole config, before anything is created
    with RunDir(cfg.out, resume=resume) as run:
        return _finetune_in(run, cfg, opts, log)


def _finetune_in(run: RunDir, cfg: Config, opts: ExtractiveOptions, log: Callable[[str], Any]) -> Path:
    """The extractive recipe proper, inside the run directory's scaffold."""
    run_dir, resume = run.path, run.resume
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    src, tgt = opts.src or None, opts.tgt or None
    train_split = read_split(cfg.data.path, opts.train_split, src, tgt, opts.source_field,
                             opts.target_field, cfg.data.errors)
    if Path(cfg.data.path).is_file() or opts.val_split not in list_splits(cfg.data.path, src, tgt):
        train_split, val_split = split_off(train_split, cfg.data.val_fraction, cfg.train.seed)
    else:
        val_split = read_split(cfg.data.path, opts.val_split, src, tgt, opts.source_field,
                               opts.target_field, cfg.data.errors)
    tokenizer, base_state = _tokenizer_and_base(cfg, opts, train_split, run_dir, resume, log)
    cfg.model.vocab_size = tokenizer.vocab_size
    cfg.model.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    if base_state is not None:  # a pretrained encoder keeps its position table
        opts.sentence_len = min(opts.sentence_len, cfg.model.max_len)
        cfg.task = dataclasses.asdict(opts)
    cfg.model.max_len = max(cfg.model.max_len, opts.sentence_len)
    cfg.model.extra["max_sentences"] = opts.max_sentences
    t0 = time.perf_counter()
    train = prepare_documents(train_split, tokenizer, opts)
    val = prepare_documents(val_split, tokenizer, opts)
    log(f"{len(train)} training / {len(val)} validation documents, oracle labels in "
        f"{time.perf_counter() - t0:.1f}s; {train.truncated + val.truncated} sentences cut to "
        f"{opts.sentence_len} tokens")
    torch.manual_seed(cfg.train.seed)
    model = build_extractive(cfg.model)
    if base_state is not None:
        missing, unexpected = model.backbone.load_state_dict(base_state, strict=False)
        if unexpected:
            raise CheckpointError(f"task.base: tensors that do not fit the backbone: {unexpected[:5]}")
    model.to(device)
    log(f"extractive {cfg.model.arch}: {count_parameters(model) / 1e6:.2f}M parameters | "
        f"vocab {tokenizer.vocab_size} | device {device}")
    task = ExtractiveTask(model, train, val, opts, cfg.train.batch_size, cfg.model.pad_id,
                          seed=cfg.train.seed, device=device)
    trainer = run.start(task, cfg, log=log, tokenizer=tokenizer, trainer_cls=Trainer)
    metrics = trainer.fit()
    if metrics:
        log(f"done: step {trainer.step}, val ROUGE-1/2/L {metrics['rouge1']:.2f} / "
            f"{metrics['rouge2']:.2f} / {metrics['rougeL']:.2f} -> {run_dir}")
    return run_dir


__all__ = ["finetune", "SentenceScorer", "build_extractive", "ExtractiveRun", "evaluate",
           "evaluate_cli", "load_extractive", "Documents", "ExtractiveOptions", "ExtractiveTask",
           "collate_documents", "lead", "oracle", "prepare_documents", "select", "split_sentences"]
