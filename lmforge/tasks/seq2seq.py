"""Sequence-to-sequence task: translation and summarization with encoder–decoder models.

    lmforge finetune seq2seq --task translate --data data/multi30k --src de --tgt en \\
        --config configs/translate-transformer.yaml --out runs/mt
    lmforge generate runs/mt --prompt "Ein Mann fährt Fahrrad." --beams 5
    lmforge evaluate runs/mt --data data/multi30k --split test_2016_flickr      # BLEU, chrF
    lmforge evaluate runs/sum --data data/scitldr --split test                  # ROUGE-1/2/L

Python:

    from lmforge.tasks.seq2seq import finetune, load_seq2seq, translate
    run_dir = finetune(task="translate", data="data/multi30k", src="de", tgt="en",
                       config="configs/translate-transformer.yaml", out="runs/mt")
    translate(load_seq2seq(run_dir), ["Ein Hund rennt."], beams=5)

Options of the task live in the `task:` section of the config (so config.yaml fully describes
a run); see `TaskOptions`. The run directory is a fine-tuning run: config.yaml,
model_config.json, tokenizer.json (+ source_tokenizer.json with separate vocabularies),
model.safetensors, best.safetensors, trainer_state.pt, metrics.csv, plots/, eval/.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..config import Config, ConfigError, apply_overrides, config_from_dict, load_config
from ..data.parallel import (
    ParallelSplit,
    encode_pairs,
    list_splits,
    read_split,
    split_off,
)
from ..models.build import build_model, count_parameters
from ..recipes.scaffold import (
    TOKENIZER_KINDS,
    RunDir,
    prepare_tokenizer,
    resume_config,
    validate_config,
)
from ..run import TOKENIZER, read_model_config, weights_path
from ..train import distributed
from ..train.loop import Trainer
from ..train.runtime import pick_device
from .seq2seq_decode import (
    beam_search,
    block_repeats,
    decode_ids,
    greedy_search,
    max_lengths,
)
from .seq2seq_infer import Seq2SeqRun, evaluate, evaluate_cli, load_seq2seq, translate
from .seq2seq_task import (
    KINDS,
    SOURCE_TOKENIZER,
    Seq2SeqTask,
    TaskOptions,
    _run_tokenizers,
    score,
)

# the config without --config: a small Transformer over a joint BPE vocabulary
DEFAULTS = ["model.head=seq2seq", "model.arch=transformer", "model.d_model=256", "model.n_layers=3",
            "model.n_heads=8", "model.d_ff=1024", "model.max_len=128", "model.dropout=0.1",
            "model.extra.label_smoothing=0.1", "train.lr=1e-3", "train.min_lr=1e-4", "tokenizer.kind=bpe", "tokenizer.vocab_size=8000",
            "out=runs/seq2seq"]




# --------------------------------------------------------------------------- tokenizers


def prepare_tokenizers(cfg: Config, opts: TaskOptions, train: ParallelSplit, run_dir: Path,
                       resume: bool, log: Callable) -> tuple[Any, Any]:
    """(source, target) tokenizers: the run's own on resume, a given file, or trained on the
    training split only (BPE by default; one joint vocabulary unless task.joint_vocab=false)."""
    if resume:
        return _run_tokenizers(run_dir)
    if opts.joint_vocab or cfg.tokenizer.path or cfg.tokenizer.kind not in TOKENIZER_KINDS:
        tok = prepare_tokenizer(cfg, lambda: train.sources + train.targets, log,
                                what=f"the {train.name} split (joint)")
        return tok, tok
    return (prepare_tokenizer(cfg, lambda: train.sources, log, what=f"the {train.name} sources"),
            prepare_tokenizer(cfg, lambda: train.targets, log, what=f"the {train.name} targets"))


# --------------------------------------------------------------------------- fine-tuning


def _read_splits(cfg: Config, opts: TaskOptions, log: Callable) -> tuple[ParallelSplit, ParallelSplit]:
    path = cfg.data.path
    if not path:
        raise ConfigError("no data: pass --data PATH (a folder of train.SRC/train.TGT or "
                          "train.jsonl files, or one .jsonl file)")
    train = read_split(path, opts.train_split, opts.src or None, opts.tgt or None,
                       opts.source_field, opts.target_field, cfg.data.errors)
    if Path(path).is_file() or opts.val_split not in list_splits(path, opts.src, opts.tgt):
        train, val = split_off(train, cfg.data.val_fraction, cfg.train.seed)
        log(f"no {opts.val_split!r} split in {path}: held out {len(val)} training pairs for validation")
    else:
        val = read_split(path, opts.val_split, opts.src or None, opts.tgt or None,
                         opts.source_field, opts.target_field, cfg.data.errors)
    for split in (train, val):
        if split.skipped_empty:
            log(f"{split.name}: skipped {split.skipped_empty} pairs with an empty source or target "
                f"({split.origin})")
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"{path}: no non-empty pairs in the {'train' if not len(train) else 'val'} split")
    return train, val


def _apply_decoder_init(cfg: Config, opts: TaskOptions, log: Callable) -> tuple[Any, dict]:
    """Match the model to a pretrained GPT run and return (its tokenizer, its weights)."""
    from ..train.checkpoint import load_state

    from ..tokenizers import load_tokenizer

    run = Path(opts.decoder_init)
    gpt = read_model_config(run)
    if gpt.arch != "gpt" or gpt.head != "causal_lm":
        raise ConfigError(f"--decoder-init {run}: needs a GPT language-model run, got "
                          f"arch={gpt.arch!r} head={gpt.head!r}")
    if cfg.model.arch != "transformer":
        raise ConfigError("--decoder-init needs model.arch=transformer")
    m = cfg.model
    m.d_model, m.n_heads, m.d_ff, m.activation = gpt.d_model, gpt.n_heads, gpt.d_ff, gpt.activation
    m.bias, m.positional, m.norm_eps = gpt.bias, gpt.positional, gpt.norm_eps
    m.extra["dec_layers"] = gpt.n_layers
    opts.joint_vocab = True
    weights = weights_path(run)
    log(f"decoder starts from {run} ({gpt.n_layers} blocks, d_model {gpt.d_model}); its tokenizer "
        "is the joint vocabulary")
    return load_tokenizer(run / TOKENIZER), load_state(weights)


def finetune(task: str = "translate", data: str | Path = "", src: str = "", tgt: str = "",
             config: str | Path | Config | None = None, out: str | Path | None = None,
             overrides: Sequence[str] = (), resume: bool = False,
             decoder_init: str | Path | None = None, log: Callable[[str], Any] = print) -> Path:
    """Train an encoder–decoder on parallel data through the one Trainer; returns the run dir."""

    extra_overrides = list(overrides)
    if data:
        extra_overrides.append(f"data.path={data}")
    if src:
        extra_overrides.append(f"task.src={src}")
    if tgt:
        extra_overrides.append(f"task.tgt={tgt}")
    if task:
        extra_overrides.append(f"task.kind={task}")
    if decoder_init:
        extra_overrides.append(f"task.decoder_init={decoder_init}")
    if resume:
        if out is None:
            raise ConfigError("resume needs the run directory (--resume RUN)")
        cfg = resume_config(out, extra_overrides)
    else:
        if out is not None:
            extra_overrides.append(f"out={out}")
        if isinstance(config, Config):
            cfg = config_from_dict(apply_overrides(config.to_dict(), extra_overrides))
        elif config is None:  # no recipe: a small BPE Transformer
            cfg = load_config(None, DEFAULTS + extra_overrides)
        else:
            cfg = load_config(config, extra_overrides)
    if cfg.model.head != "seq2seq":
        if cfg.model.head == "extractive":
            from .extractive import finetune as extractive_finetune

            return extractive_finetune(cfg, resume=resume, log=log)
        raise ConfigError(f"model.head={cfg.model.head!r}: seq2seq fine-tuning needs model.head=seq2seq")
    opts = TaskOptions.from_config(cfg)
    cfg.task = dataclasses.asdict(opts)
    validate_config(cfg)  # the whole config, before anything is created
    info = distributed.setup(cfg.train.device)
    with RunDir(cfg.out, resume=resume) as run:
        return _finetune_in(run, cfg, opts, info, log)


def _finetune_in(run: RunDir, cfg: Config, opts: TaskOptions, info: distributed.DistInfo,
                 log: Callable[[str], Any]) -> Path:
    """The seq2seq recipe proper, inside the run directory's scaffold."""
    tcfg, run_dir, resume = cfg.train, run.path, run.resume
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    device = distributed.device_for(info, pick_device(tcfg.device))

    train_split, val_split = _read_splits(cfg, opts, log)
    gpt_state = None
    if opts.decoder_init and not resume:
        src_tok, gpt_state = _apply_decoder_init(cfg, opts, log)
        tgt_tok = src_tok
    else:
        src_tok, tgt_tok = prepare_tokenizers(cfg, opts, train_split, run_dir, resume, log)
    max_src, max_tgt = opts.limits(cfg)
    cfg.model.vocab_size = tgt_tok.vocab_size
    cfg.model.extra["src_vocab_size"] = 0 if src_tok is tgt_tok else src_tok.vocab_size
    cfg.model.extra["max_src_len"] = max_src
    cfg.model.max_len = max(cfg.model.max_len, max_tgt)
    if tgt_tok.pad_id is None:
        raise ConfigError("the tokenizer has no <pad> token")
    cfg.model.pad_id = tgt_tok.pad_id
    train = encode_pairs(train_split, src_tok, tgt_tok, max_src, max_tgt)
    val = encode_pairs(val_split, src_tok, tgt_tok, max_src, max_tgt)
    for name, pairs in (("train", train), ("val", val)):
        if pairs.truncated_src or pairs.truncated_tgt:
            log(f"{name}: truncated {pairs.truncated_src} sources to {max_src} tokens and "
                f"{pairs.truncated_tgt} targets to {max_tgt} tokens (task.max_src_len / max_tgt_len)")

    torch.manual_seed(tcfg.seed)
    model = build_model(cfg.model)
    if gpt_state is not None:
        from ..models.seq2seq import load_gpt_decoder

        loaded = load_gpt_decoder(model, gpt_state)
        log(f"--decoder-init: loaded {len(loaded)} tensors into the decoder")
    model.to(device)
    log(f"{cfg.model.arch} seq2seq ({opts.kind}): {count_parameters(model) / 1e6:.2f}M parameters | "
        f"vocab {tgt_tok.vocab_size}{'' if src_tok is tgt_tok else f' / source {src_tok.vocab_size}'} | "
        f"train {len(train):,} pairs ({train.stats['tgt_tokens']:,} target tokens) | val {len(val):,} "
        f"| device {device}")
    task = Seq2SeqTask(model, train, val, val_split, tgt_tok, opts, tcfg.batch_size, tgt_tok.pad_id,
                       seed=tcfg.seed, eval_batches=tcfg.eval_batches, device=device,
                       rank=info.rank, world_size=info.world_size)
    log(f"{len(task.train)} batches per epoch")
    files = {} if resume or src_tok is tgt_tok else {SOURCE_TOKENIZER: src_tok.save}
    trainer = run.start(task, cfg, log=log if info.rank == 0 else (lambda *a: None),
                        tokenizer=tgt_tok, files=files, trainer_cls=Trainer)
    metrics = trainer.fit()
    if metrics and info.rank == 0:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        log(f"done: step {trainer.step} (epoch {task.train.epoch + 1}), {shown}, "
            f"{trainer.elapsed:.0f}s of training -> {run_dir}")
    return run_dir


def finetune_cli(argv: list[str]) -> int:
    """lmforge finetune seq2seq --task translate|summarize --data PATH [--src L --tgt L] ..."""
    parser = argparse.ArgumentParser(
        prog="lmforge finetune seq2seq",
        description="Train an encoder-decoder (Transformer or recurrent with attention) for "
                    "translation or summarization. Trailing key=value pairs override the config.")
    parser.add_argument("--task", choices=KINDS, default=None, help="translate (BLEU) or summarize (ROUGE)")
    parser.add_argument("--data", help="folder of SPLIT.SRC/SPLIT.TGT or SPLIT.jsonl files, or a .jsonl")
    parser.add_argument("--src", help="source language suffix (train.de -> de)")
    parser.add_argument("--tgt", help="target language suffix")
    parser.add_argument("--config", help="YAML recipe (configs/translate-*.yaml, summarize-*.yaml)")
    parser.add_argument("--out", help="run directory to create")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    parser.add_argument("--decoder-init", metavar="RUN", help="start the decoder from a GPT run")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    finetune(task=args.task or "", data=args.data or "", src=args.src or "", tgt=args.tgt or "",
             config=args.config, out=args.resume or args.out, overrides=args.overrides,
             resume=bool(args.resume), decoder_init=args.decoder_init)
    return 0




__all__ = ["finetune", "finetune_cli", "prepare_tokenizers", "DEFAULTS",
           # the task, decoding and inference, importable from here as before the split
           "KINDS", "SOURCE_TOKENIZER", "Seq2SeqTask", "TaskOptions", "score", "beam_search",
           "block_repeats", "decode_ids", "greedy_search", "max_lengths", "Seq2SeqRun", "evaluate",
           "evaluate_cli", "load_seq2seq", "translate"]
