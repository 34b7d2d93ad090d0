"""Pretraining recipe: corpus -> tokenizer -> token shards -> model -> trainer -> run directory.

    from lmforge import pretrain, load_config
    run_dir = pretrain(load_config("configs/shakespeare-char-gpt.yaml", ["train.max_steps=500"]))

The run-directory checks, lock, writes and clean-up are the shared scaffold's
(recipes/scaffold.py); what is pretraining's own is the corpus and the task of the head.
"""

from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path
from typing import Any, Callable

import torch

from .config import Config, ConfigError
from .memory.check import check_fits
from .models.build import build_model, count_parameters
from .nn.lora import has_lora, mark_only_lora_trainable
from .recipes.scaffold import RunDir, check_steps, prepare_tokenizer, resume_config, validate_config  # noqa: F401
from .tasks.registry import pretrain_task
from .train import distributed
from .train.checkpoint import TRAINER_STATE, load_weights
from .train.runtime import pick_device


def pretrain(config: Config, resume: bool = False, log: Callable[[str], Any] = print, *,
             out: str | Path | None = None) -> Path:
    """Train a language model as `config` says (into `out`, default `config.out`); returns the
    run directory. `resume=True` continues the run already in that directory."""
    from .data.corpus import resolve_corpus_files, tokenize_corpus

    cfg = config
    if out is not None:
        cfg.out = str(out)
    tcfg = cfg.train
    pretrain_task(cfg.model.head)  # a head that cannot be pretrained is refused up front
    validate_config(cfg)
    check_steps(cfg)
    info = distributed.setup(tcfg.device)
    log = log if info.rank == 0 else _quiet  # one voice under torchrun
    if not resume and (Path(cfg.out) / TRAINER_STATE).exists():  # the CLI checks first, in flags
        raise ConfigError(f"{cfg.out} already holds a run; continue it with "
                          f"lmforge.pretrain(cfg, resume=True) or train into a new folder with "
                          f"lmforge.pretrain(cfg, out='runs/another')")
    files = resolve_corpus_files(cfg.data.path)
    with RunDir(cfg.out, resume=resume) as run:
        if tcfg.threads > 0:
            torch.set_num_threads(tcfg.threads)
        device = distributed.device_for(info, pick_device(tcfg.device))
        tokenizer = _shared_tokenizer(cfg, files, run.path, resume, log, info)
        cache_dir = cfg.data.cache_dir or None
        with distributed.local_main_first():  # one process per machine fills the token cache
            corpus = tokenize_corpus(files, tokenizer, cfg.data.val_fraction, cache_dir=cache_dir,
                                     text_field=cfg.data.text_field, errors=cfg.data.errors,
                                     progress=tcfg.progress and info.rank == 0)
        _warn_unknown(tokenizer, corpus, files, cfg, log)
        cfg.model.vocab_size = tokenizer.vocab_size
        if tokenizer.pad_id is not None:
            cfg.model.pad_id = tokenizer.pad_id
        check_fits(cfg.model, tcfg, device)  # refuse now what would be killed for memory later
        torch.manual_seed(tcfg.seed)
        model = build_model(cfg.model).to(device)
        if tcfg.init_from and not resume:
            from .nn.lora_io import load_base_weights
            from .run import weights_path

            if has_lora(model):  # fresh adapters over the base (finetune lm --mode lora)
                load_base_weights(model, weights_path(tcfg.init_from))
            else:
                load_weights(model, weights_path(tcfg.init_from))
            log(f"initialised from {tcfg.init_from}")
        if has_lora(model):
            mark_only_lora_trainable(model)  # only the adapters train
        n_params = count_parameters(model)
        tokens_per_step = tcfg.batch_size * tcfg.grad_accum * info.world_size * cfg.model.max_len
        log(f"{cfg.model.arch}: {n_params / 1e6:.2f}M parameters | vocab {tokenizer.vocab_size} | "
            f"train {len(corpus.train):,} / val {len(corpus.val):,} tokens | device {device} | "
            f"{tokens_per_step:,} tokens per step (batch {tcfg.batch_size} x accum {tcfg.grad_accum}"
            f" x world {info.world_size} x context {cfg.model.max_len})")
        task_cls = pretrain_task(cfg.model.head)
        if "world_size" in inspect.signature(task_cls).parameters:
            # one seed everywhere: each rank takes its slice of the same global batch
            shard: dict[str, Any] = {"seed": tcfg.seed, "rank": info.rank,
                                     "world_size": info.world_size}
        else:
            shard = {"seed": tcfg.seed + info.rank}  # each rank draws its own random windows
        task = task_cls(
            model, tokenizer, corpus.train, corpus.val, block_size=cfg.model.max_len,
            batch_size=tcfg.batch_size, eval_batches=tcfg.eval_batches,
            tbptt=tcfg.tbptt, sample_tokens=tcfg.sample_tokens, device=device, **shard)
        trainer = run.start(task, cfg, log=log, tokenizer=tokenizer)
        metrics = trainer.fit()
    if metrics and info.rank == 0:
        log(f"done: step {trainer.step}, val loss {metrics['loss']:.4f}, "
            f"{trainer.elapsed:.0f}s of training -> {run.path}")
    return run.path


def _shared_tokenizer(cfg: Config, files: list[Path], run_dir: Path, resume: bool,
                      log: Callable, info: distributed.DistInfo):
    """Rank 0 prepares the tokenizer; under torchrun the others receive it, so every rank
    holds the same vocabulary and none needs the run directory (which may be on rank 0's disk)."""
    from .data.corpus import corpus_texts_for_training

    def prepare():
        return prepare_tokenizer(
            cfg, lambda: corpus_texts_for_training(files, cfg.data.text_field, cfg.data.errors),
            log, run_dir=run_dir if resume else None, what="the corpus")

    if not info.enabled:
        return prepare()
    from .tokenizers import Tokenizer

    data = prepare().to_json() if info.rank == 0 else None
    return Tokenizer.from_json(distributed.broadcast_object(data))


def _quiet(*args: Any, **kwargs: Any) -> None:
    pass


def _warn_unknown(tokenizer: Any, corpus: Any, files: list, cfg: Config, log: Callable) -> None:
    """Warn once when the corpus encodes to <unk> (text the base tokenizer never saw): count
    from the token ids, examples from the first characters of the text."""
    from .data.corpus import iter_documents
    from .tokenizers.unknown import unknown_characters

    unk = tokenizer.unk_id
    if unk is None:
        return
    count = int((corpus.train == unk).sum() + (corpus.val == unk).sum())
    if count:
        _, chars = unknown_characters(tokenizer, iter_documents(files, cfg.data.text_field,
                                                                cfg.data.errors))
        shown = ", ".join(repr(c) for c in chars) or "(whole words)"
        log(f"warning: {count:,} token(s) of the training text are unknown to the tokenizer and "
            f"become <unk> (e.g. {shown}); the model learns nothing from them")


class _CallableModule(types.ModuleType):
    """Importing the submodule `lmforge.pretrain` rebinds the package attribute of that name
    to this module; calling it still runs `pretrain(...)`, so `lmforge.pretrain(...)` always
    works."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return pretrain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
