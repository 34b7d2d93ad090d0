"""Supervised fine-tuning (instruction tuning) of a pretrained causal LM on chat data.

    lmforge finetune sft --base runs/smollm2 --data chats.jsonl --out runs/smol-sft --lora.rank 16
    lmforge finetune sft --base runs/smollm2 --data alpaca.json --val val.json --mode full
    lmforge finetune sft --resume runs/smol-sft
    lmforge evaluate runs/smol-sft --data chats-test.jsonl      # assistant-token loss, perplexity

The data (four common shapes, `lmforge.tasks.sft_data`) is rendered with the base's chat
template, and the loss covers the assistant tokens of every assistant turn (all tokens
with task.train_on_prompt=true). Validation is a --val file or data.val_fraction of the
data. Batches are length-bucketed. Mode lora (default) trains adapters on the linear layers
named by task.lora.targets and writes adapter.safetensors (+ RUN/merged unless --no-merge);
mode full trains every weight. Training is the common Trainer: --resume continues exactly.
Summarization is SFT too: {"prompt": "Summarize in one sentence:\\n\\n<document>",
"completion": "<summary>"} rows (docs/finetune.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import Config, ConfigError, _from_dict, apply_overrides, config_from_dict
from ..eval.metrics import perplexity
from ..models.build import count_parameters
from ..models.heads import IGNORE_INDEX
from ..recipes.scaffold import FinishedRun, RunDir
from ..run import CONFIG, TOKENIZER, read_model_config
from ..train.runtime import pick_device
from .llm_recipe import (LoRASettings, check_mode, finish_lora, lora_from_args, load_base_model,
                         make_policy, read_bos, open_run, rebuild_policy, run_config,
                         start_trainer)
from .sft_batches import BucketSampler, collate_lm
from .sft_data import EncodedSplit, encode_split, read_conversations, split_off

# training defaults of an SFT run (the base's own pretraining settings do not apply)
TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 8, "lr": 2e-4, "min_lr": 2e-5, "warmup_steps": 10, "weight_decay": 0.0,
    "schedule": "cosine", "max_steps": 200, "eval_every": 50, "log_every": 10,
    "sample_tokens": 0, "grad_clip": 1.0,
    "chunked_ce": True}  # only the assistant positions are projected to the vocabulary
FULL_LR = {"lr": 2e-5, "min_lr": 2e-6}  # full fine-tuning moves every weight: 10x smaller steps


@dataclass
class SFTOptions:
    """config.task of an SFT run."""

    name: str = "sft"  # the task (tasks/registry.py): `lmforge evaluate` dispatches on it
    base: str = ""  # the pretrained run fine-tuned (its weights, tokenizer, chat template)
    val: str = ""  # validation chat file ("" = data.val_fraction of the data)
    mode: str = "lora"  # lora | full
    lora: LoRASettings = field(default_factory=LoRASettings)
    train_on_prompt: bool = False  # loss on every token, not only the assistant replies
    max_len: int = 0  # tokens per example (longer ones truncated, counted); 0 = model.max_len
    bucket: bool = True  # batch examples of similar length together
    epochs: float = 0.0  # > 0: train.max_steps = epochs over the training set
    eval_batch_size: int = 16

    def validate(self) -> None:
        check_mode(self.mode)
        if self.max_len < 0 or self.epochs < 0:
            raise ConfigError("task.max_len and task.epochs must be >= 0")


def parse_options(task: dict[str, Any], source: str) -> SFTOptions:
    opts = _from_dict(SFTOptions, task, prefix="task", source=source)
    opts.validate()
    return opts


# --------------------------------------------------------------------------- the task


class SFTTask:
    """Length-bucketed chat batches; validation = assistant-token loss over the whole val set.

    `batch_tokens` counts the real (unpadded) input tokens, so tokens_per_s is a true
    throughput."""

    metric_names = ["ppl"]
    monitor = ("loss", "min")
    keep_best = False

    def __init__(self, model: nn.Module, train: EncodedSplit, val: EncodedSplit, batch_size: int,
                 eval_batch_size: int, pad_id: int, seed: int, bucket: bool = True,
                 device: torch.device | str = "cpu") -> None:
        self.model, self.train, self.val = model, train, val
        self.pad_id, self.device, self.eval_batch_size = pad_id, torch.device(device), eval_batch_size
        self.sampler = BucketSampler(train.lengths, batch_size, seed=seed, bucket=bucket)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        rows = [self.train.examples[i] for i in self.sampler.next()]
        x, y = collate_lm(rows, self.pad_id, self.device)
        return x, y, sum(len(e.ids) - 1 for e in rows)

    def batch_tokens(self, batch: tuple[torch.Tensor, torch.Tensor, int]) -> int:
        return batch[2]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, int], model: nn.Module | None = None) -> torch.Tensor:
        x, y, _ = batch  # (B, T), (B, T) with IGNORE_INDEX off the assistant tokens
        return (self.model if model is None else model)(x, y)[1]

    def evaluate(self) -> dict[str, float]:
        loss, _ = split_loss(self.model, self.val, self.eval_batch_size, self.pad_id, self.device)
        return {"loss": loss, "ppl": perplexity(loss)}

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["train"])


@torch.no_grad()
def split_loss(model: nn.Module, split: EncodedSplit, batch_size: int, pad_id: int,
               device: torch.device) -> tuple[float, int]:
    """Mean next-token loss over every loss token of `split`, and their number."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(split.examples)), key=lambda i: len(split.examples[i].ids))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        rows = [split.examples[i] for i in order[start: start + batch_size]]
        x, y = collate_lm(rows, pad_id, device)
        n = int((y != IGNORE_INDEX).sum())
        total += model(x, y)[1].float().item() * n
        count += n
    model.train(was_training)
    return total / max(count, 1), count


# --------------------------------------------------------------------------- the recipe


def build_config(data: str, base: str, out: str, overrides: list[str], options: dict[str, Any]) -> Config:
    """A new run's config: SFT training defaults <- options <- dotted overrides."""
    from ..convert.cli import resolve_base

    base_dir = resolve_base(base)
    model = read_model_config(base_dir)
    mode = options.get("mode", "lora")
    raw: dict[str, Any] = {
        "model": dataclasses.asdict(model), "tokenizer": {"path": str(base_dir / TOKENIZER)},
        "data": {"path": data}, "out": out,
        "train": {**TRAIN_DEFAULTS, **(FULL_LR if mode == "full" else {})},
        "task": {**options, "name": "sft", "base": str(base_dir)}}
    apply_overrides(raw, overrides)
    return config_from_dict(raw, source="finetune sft")


def load_splits(cfg: Config, opts: SFTOptions, log: Callable) -> tuple[list, list]:
    train = read_conversations(cfg.data.path, cfg.data.format)
    if opts.val:
        return train, read_conversations(opts.val, cfg.data.format)
    train, val = split_off(train, cfg.data.val_fraction, cfg.train.seed)
    log(f"held out {len(val)} of {len(train) + len(val)} conversations for validation "
        f"(data.val_fraction={cfg.data.val_fraction})")
    return train, val


def finetune(data: str | None = None, base: str | None = None, out: str | None = None,
             overrides: list[str] | None = None, resume: str | None = None,
             log: Callable[[str], Any] = print, **options: Any) -> Path:
    """Fine-tune `base` on the chat file `data`; returns the run directory."""
    cfg = run_config(resume, overrides, lambda: build_config(data, base, out, overrides or [], options)
                     if data and base and out else None, "sft")
    with open_run(cfg, resume) as run:
        return _finetune_in(run, cfg, log)


def _finetune_in(run: RunDir, cfg: Config, log: Callable[[str], Any]) -> Path:
    """The recipe proper, inside the run directory's scaffold (checks, lock, clean-up)."""
    from ..chat import ChatTemplate
    from ..tokenizers import load_tokenizer

    run_dir, resume = run.path, run.resume
    opts = parse_options(cfg.task, str(run_dir / CONFIG))
    base_dir, tcfg = Path(opts.base), cfg.train
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    device = pick_device(tcfg.device)
    source = run_dir if resume else base_dir
    tokenizer = load_tokenizer(source / TOKENIZER)
    template = ChatTemplate.from_run(source)

    torch.manual_seed(tcfg.seed)  # the adapters' initial A: the same for the same seed
    if resume:
        model = rebuild_policy(run_dir)
    else:
        model, _ = load_base_model(base_dir)
        model = make_policy(model, opts.mode, opts.lora)
    m = model.config
    max_len = opts.max_len or m.max_len
    train_conv, val_conv = load_splits(cfg, opts, log)
    bos = read_bos(source, tokenizer)
    splits = {}
    for name, convs in (("train", train_conv), ("val", val_conv)):
        split = encode_split(convs, template, tokenizer, max_len, opts.train_on_prompt, bos)
        if split.truncated or split.dropped:
            log(f"{name}: {split.truncated} of {len(convs)} conversations truncated to "
                f"{max_len + 1} tokens, {split.dropped} dropped (no assistant token left)")
        if not split.examples:
            raise ConfigError(f"{name} split: no example keeps an assistant token within "
                              f"{max_len} tokens; raise task.max_len")
        splits[name] = split
    if opts.epochs:
        tcfg.max_steps = max(1, math.ceil(opts.epochs * len(splits["train"].examples)
                                          / (tcfg.batch_size * tcfg.grad_accum)))
    cfg.model, cfg.task = m, {**dataclasses.asdict(opts), "name": "sft"}
    model.to(device)
    n_train = count_parameters(model, trainable_only=True)
    log(f"SFT ({opts.mode}) of {base_dir}: {count_parameters(model) / 1e6:.2f}M parameters, "
        f"{n_train / 1e6:.3f}M trainable | train {len(splits['train'].examples)} / val "
        f"{len(splits['val'].examples)} conversations | template {template.origin} | "
        f"device {device}")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    task = SFTTask(model, splits["train"], splits["val"], tcfg.batch_size, opts.eval_batch_size,
                   pad, tcfg.seed, opts.bucket, device)
    trainer = start_trainer(run, task, cfg, base_dir, log)
    if isinstance(trainer, FinishedRun):
        return run_dir  # a resumed run already at train.max_steps: nothing written
    metrics = trainer.fit()
    if metrics:
        log(f"done: step {trainer.step}, val loss {metrics['loss']:.4f} -> {run_dir}")
    if opts.mode == "lora":
        finish_lora(run_dir, model, base_dir, opts.lora.merge, log)
    return run_dir


# --------------------------------------------------------------------------- command line


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options SFT and DPO share."""
    p.add_argument("--base", help="pretrained run (lmforge, or converted from HF / GGUF)")
    p.add_argument("--data", help="training file (.jsonl or .json)")
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    p.add_argument("--val", help="validation file (default: data.val_fraction of --data)")
    p.add_argument("--mode", choices=["lora", "full"])
    p.add_argument("--lora.rank", dest="lora_rank", type=int)
    p.add_argument("--lora.alpha", dest="lora_alpha", type=float)
    p.add_argument("--lora.dropout", dest="lora_dropout", type=float)
    p.add_argument("--lora.targets", dest="lora_targets", help="comma-separated layer names, "
                   "e.g. q,k,v,o,gate,up,down (default: every linear layer)")
    p.add_argument("--no-merge", action="store_true", help="LoRA: keep the adapters only "
                   "(adapter.safetensors), do not write RUN/merged")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def common_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("val", "mode"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    lora = lora_from_args(args)
    if lora:
        options["lora"] = lora
    return options


def run_cli(finetune_fn: Callable, args: argparse.Namespace, options: dict[str, Any]) -> int:
    with warnings.catch_warnings():
        # one line per warning on the command line (e.g. a base without a chat template)
        warnings.showwarning = lambda message, *a, **k: print(f"lmforge: warning: {message}",
                                                             file=sys.stderr)
        finetune_fn(args.data, base=args.base, out=args.out, overrides=args.overrides,
                    resume=args.resume, **options)
    return 0


def finetune_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lmforge finetune sft",
        description="Instruction-tune a pretrained language model on chat data (messages, "
                    "ShareGPT, Alpaca or prompt/completion JSONL). Trailing key=value pairs "
                    "override the config, e.g. train.lr=1e-4 task.train_on_prompt=true.")
    add_common_arguments(p)
    args = p.parse_intermixed_args(argv)
    return run_cli(finetune, args, common_options(args))


def evaluate_cli(argv: list[str]) -> int:
    """lmforge evaluate SFT_RUN --data FILE: assistant-token loss and perplexity."""
    from ..chat import ChatTemplate
    from ..run import load_run

    p = argparse.ArgumentParser(prog="lmforge evaluate",
                                description="Assistant-token loss and perplexity of an SFT run.")
    p.add_argument("run")
    p.add_argument("--data", required=True, help="chat file (.jsonl / .json)")
    p.add_argument("--format", default="", help="messages | sharegpt | alpaca | prompt_completion")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    run = load_run(args.run, device=args.device, weights="last")
    opts = parse_options(run.config.task, str(Path(args.run) / CONFIG)) if run.config else SFTOptions()
    template = ChatTemplate.from_run(args.run)
    max_len = opts.max_len or run.model_config.max_len
    split = encode_split(read_conversations(args.data, args.format), template, run.tokenizer,
                         max_len, opts.train_on_prompt, read_bos(Path(args.run), run.tokenizer))
    pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
    loss, count = split_loss(run.model, split, args.batch_size, pad, run.device)
    print(f"{Path(args.data).name}: {len(split.examples)} conversations, {count:,} assistant "
          f"tokens | loss {loss:.4f} | perplexity {perplexity(loss):.2f}"
          + (f" | {split.truncated} truncated" if split.truncated else ""))
    return 0
