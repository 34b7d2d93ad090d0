"""Pretraining recipe: corpus -> tokenizer -> token shards -> model -> trainer -> run directory.

    from lmforge import pretrain, load_config
    run_dir = pretrain(load_config("configs/shakespeare-char-gpt.yaml", ["train.max_steps=500"]))
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch

from .config import Config, ConfigError, apply_overrides, config_from_dict, read_yaml, save_config
from .models.build import build_model, count_parameters
from .run import CONFIG, MODEL_CONFIG, TOKENIZER, read_model_config
from .train import distributed
from .train.checkpoint import TRAINER_STATE, atomic_write_text, load_weights
from .train.loop import Trainer, pick_device


def resume_config(run_dir: str | Path, overrides: list[str]) -> Config:
    """The config a run was started with, plus overrides; the architecture must not change."""
    run_dir = Path(run_dir)
    if not (run_dir / TRAINER_STATE).is_file():
        raise ConfigError(f"--resume {run_dir}: no {TRAINER_STATE} there to resume from")
    data = read_yaml(run_dir / CONFIG)
    apply_overrides(data, overrides)
    data["out"] = str(run_dir)
    cfg = config_from_dict(data, source=str(run_dir / CONFIG))
    saved = dataclasses.asdict(read_model_config(run_dir))
    wanted = dataclasses.asdict(cfg.model)
    changed = [k for k in saved if k != "vocab_size" and saved[k] != wanted.get(k)]
    if changed:
        k = changed[0]
        raise ConfigError(f"--resume {run_dir}: model.{k}={wanted[k]!r} differs from the run's "
                          f"{saved[k]!r}; a resumed run keeps its architecture")
    return cfg


def prepare_tokenizer(cfg: Config, files: list[Path], run_dir: Path, resume: bool, log: Callable):
    """Load the run's tokenizer (resume), a given tokenizer.json, or train one on the corpus."""
    from .data.corpus import corpus_texts_for_training
    from .tokenizers import load_tokenizer, train_tokenizer

    tc = cfg.tokenizer
    if resume:
        return load_tokenizer(run_dir / TOKENIZER)
    if tc.path:
        return load_tokenizer(tc.path)
    if tc.kind not in ("char", "word", "bpe", "wordpiece"):
        if Path(tc.kind).exists():
            return load_tokenizer(tc.kind)
        raise ConfigError(f"tokenizer.kind={tc.kind!r} is not char, word, bpe, wordpiece "
                          "or a path to a tokenizer.json")
    t0 = time.perf_counter()
    texts = corpus_texts_for_training(files, cfg.data.text_field, cfg.data.errors)
    tokenizer = train_tokenizer(tc.kind, texts, vocab_size=tc.vocab_size, lowercase=tc.lowercase,
                                min_frequency=tc.min_frequency)
    log(f"trained a {tc.kind} tokenizer: {tokenizer.vocab_size} tokens "
        f"in {time.perf_counter() - t0:.1f}s")
    return tokenizer


def pretrain(config: Config, resume: bool = False, log: Callable[[str], Any] = print, *,
             out: str | Path | None = None) -> Path:
    """Train a language model as `config` says (into `out`, default `config.out`); returns the
    run directory. `resume=True` continues the run already in that directory."""
    from .data.corpus import resolve_corpus_files, tokenize_corpus

    cfg = config
    if out is not None:
        cfg.out = str(out)
    tcfg = cfg.train
    run_dir = Path(cfg.out)
    info = distributed.setup(tcfg.device)
    log = log if info.rank == 0 else _quiet  # one voice under torchrun
    if not resume and (run_dir / TRAINER_STATE).exists():  # the CLI checks first, in flags
        raise ConfigError(f"{run_dir} already holds a run; continue it with "
                          f"lmforge.pretrain(cfg, resume=True) or train into a new folder with "
                          f"lmforge.pretrain(cfg, out='runs/another')")
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    device = distributed.device_for(info, pick_device(tcfg.device))
    files = resolve_corpus_files(cfg.data.path)
    tokenizer = _shared_tokenizer(cfg, files, run_dir, resume, log, info)
    cache_dir = cfg.data.cache_dir or None
    with distributed.local_main_first():  # one process per machine fills the token cache
        corpus = tokenize_corpus(files, tokenizer, cfg.data.val_fraction, cache_dir=cache_dir,
                                 text_field=cfg.data.text_field, errors=cfg.data.errors,
                                 progress=tcfg.progress and info.rank == 0)
    cfg.model.vocab_size = tokenizer.vocab_size
    if tokenizer.pad_id is not None:
        cfg.model.pad_id = tokenizer.pad_id
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg.model).to(device)
    if tcfg.init_from and not resume:
        from .run import weights_path

        load_weights(model, weights_path(tcfg.init_from))
        log(f"initialised from {tcfg.init_from}")
    if info.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG)
        atomic_write_text(run_dir / MODEL_CONFIG, cfg.model.to_json())
        if not resume:
            tokenizer.save(run_dir / TOKENIZER)
    n_params = count_parameters(model)
    tokens_per_step = tcfg.batch_size * tcfg.grad_accum * info.world_size * cfg.model.max_len
    log(f"{cfg.model.arch}: {n_params / 1e6:.2f}M parameters | vocab {tokenizer.vocab_size} | "
        f"train {len(corpus.train):,} / val {len(corpus.val):,} tokens | device {device} | "
        f"{tokens_per_step:,} tokens per step (batch {tcfg.batch_size} x accum {tcfg.grad_accum}"
        f" x world {info.world_size} x context {cfg.model.max_len})")
    task_cls = _task_class(cfg.model.head)
    if "world_size" in inspect.signature(task_cls).parameters:
        # one seed everywhere: each rank takes its slice of the same global batch
        shard: dict[str, Any] = {"seed": tcfg.seed, "rank": info.rank, "world_size": info.world_size}
    else:
        shard = {"seed": tcfg.seed + info.rank}  # each rank draws its own random windows
    task = task_cls(
        model, tokenizer, corpus.train, corpus.val, block_size=cfg.model.max_len,
        batch_size=tcfg.batch_size, eval_batches=tcfg.eval_batches,
        tbptt=tcfg.tbptt, sample_tokens=tcfg.sample_tokens, device=device, **shard)
    trainer = Trainer(task, tcfg, run_dir, resume=resume, log=log)
    metrics = trainer.fit()
    if metrics and info.rank == 0:
        log(f"done: step {trainer.step}, val loss {metrics['loss']:.4f}, "
            f"{trainer.elapsed:.0f}s of training -> {run_dir}")
    return run_dir


def _shared_tokenizer(cfg: Config, files: list[Path], run_dir: Path, resume: bool,
                      log: Callable, info: distributed.DistInfo):
    """Rank 0 prepares the tokenizer; under torchrun the others receive it, so every rank
    holds the same vocabulary and none needs the run directory (which may be on rank 0's disk)."""
    if not info.enabled:
        return prepare_tokenizer(cfg, files, run_dir, resume, log)
    from .tokenizers import Tokenizer

    data = prepare_tokenizer(cfg, files, run_dir, resume, log).to_json() if info.rank == 0 else None
    return Tokenizer.from_json(distributed.broadcast_object(data))


def _task_class(head: str):
    """The pretraining objective that goes with a model head."""
    if head == "causal_lm":
        from .tasks.lm import LanguageModelingTask

        return LanguageModelingTask
    if head == "masked_lm":
        from .tasks.mlm import MaskedLMTask

        return MaskedLMTask
    raise ConfigError(f"model.head={head!r} cannot be pretrained; use causal_lm or masked_lm "
                      "(fine-tune other heads with `lmforge finetune`)")


def _quiet(*args: Any, **kwargs: Any) -> None:
    pass


class _CallableModule(types.ModuleType):
    """Importing the submodule `lmforge.pretrain` rebinds the package attribute of that name
    to this module; calling it still runs `pretrain(...)`, so `lmforge.pretrain(...)` always
    works."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return pretrain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
