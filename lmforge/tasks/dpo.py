"""Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization:
Your Language Model is Secretly a Reward Model", Eq. 7).

    lmforge finetune dpo --base runs/smol-sft --data prefs.jsonl --out runs/smol-dpo --dpo.beta 0.1
    lmforge evaluate runs/smol-dpo --data prefs-test.jsonl      # held-out reward accuracy

For a prompt x and replies y_w (chosen) and y_l (rejected), with log p summed over the
reply's tokens,

    r(y) = beta * (log pi(y | x) - log pi_ref(y | x))          the implicit reward
    loss = -log sigmoid(r(y_w) - r(y_l))

The reference is the base: in LoRA mode the policy itself with its adapters switched off
(`disable_adapters`, no second copy in memory), in full mode a frozen copy. metrics.csv's
validation rows carry reward accuracy (share of pairs with r(y_w) > r(y_l)), reward margin
(mean r(y_w) - r(y_l)), the mean chosen / rejected rewards and log-probabilities.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError, _from_dict, apply_overrides, config_from_dict
from ..models.build import count_parameters
from ..nn.chunked_ce import chunked_token_logprobs
from ..nn.lora import disable_adapters, has_lora
from ..recipes.scaffold import FinishedRun, RunDir
from ..run import CONFIG, TOKENIZER, read_model_config
from ..train.runtime import pick_device
from .dpo_data import EncodedPairs, collate_pairs, encode_pairs, read_pairs
from .llm_recipe import (LoRASettings, check_mode, finish_lora, load_base_model,
                         make_policy, read_bos, open_run, rebuild_policy, run_config,
                         start_trainer)
from .sft import add_common_arguments, common_options, run_cli
from .sft_batches import BucketSampler
from .sft_data import split_off

TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 4, "lr": 5e-5, "min_lr": 5e-6, "warmup_steps": 10, "weight_decay": 0.0,
    "schedule": "cosine", "max_steps": 200, "eval_every": 50, "log_every": 10,
    "sample_tokens": 0, "grad_clip": 1.0}
FULL_LR = {"lr": 5e-7, "min_lr": 5e-8}  # the paper's full fine-tuning rate is 1e-6
METRICS = ["reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward",
           "chosen_logp", "rejected_logp"]


@dataclass
class DPOOptions:
    """config.task of a DPO run."""

    name: str = "dpo"  # the task (tasks/registry.py): `lmforge evaluate` dispatches on it
    base: str = ""
    val: str = ""
    mode: str = "lora"
    lora: LoRASettings = field(default_factory=LoRASettings)
    beta: float = 0.1  # strength of the pull towards the reference (the KL penalty's weight)
    max_len: int = 0
    bucket: bool = True
    epochs: float = 0.0
    eval_batch_size: int = 8

    def validate(self) -> None:
        check_mode(self.mode)
        if self.beta <= 0:
            raise ConfigError(f"task.beta must be > 0, got {self.beta}")


def dpo_loss(chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
             ref_rejected_logp: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean DPO loss over pairs (all inputs (B,) summed log-probs) and the per-pair rewards."""
    chosen_reward = beta * (chosen_logp - ref_chosen_logp)  # (B,)
    rejected_reward = beta * (rejected_logp - ref_rejected_logp)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, {"chosen_reward": chosen_reward.detach(), "rejected_reward": rejected_reward.detach()}


def sequence_logprobs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y | x) summed over each row's scored positions (B,); only those positions are
    projected to the vocabulary (`chunked_token_logprobs`)."""
    core = getattr(model, "module", model)  # under DDP the wrapped model
    hidden, _ = core.backbone(x)  # (B, T, D)
    return chunked_token_logprobs(hidden, core.lm_head.weight, y).sum(-1)  # (B,)


class DPOTask:
    """Preference-pair batches; the reference log-probs are computed alongside each batch."""

    metric_names = METRICS
    monitor = ("loss", "min")
    keep_best = False

    def __init__(self, model: nn.Module, reference: nn.Module | None, train: EncodedPairs,
                 val: EncodedPairs, beta: float, batch_size: int, eval_batch_size: int,
                 pad_id: int, seed: int, bucket: bool = True,
                 device: torch.device | str = "cpu") -> None:
        """`reference` None: the policy with its adapters off (LoRA) is the reference."""
        if reference is None and not has_lora(model):
            raise ValueError("a policy without LoRA adapters needs a reference model")
        self.model, self.reference, self.train, self.val = model, reference, train, val
        self.beta, self.pad_id, self.device = beta, pad_id, torch.device(device)
        self.eval_batch_size = eval_batch_size
        self.sampler = BucketSampler(train.lengths, batch_size, seed=seed, bucket=bucket)

    def reference_logprobs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is not None:
                return sequence_logprobs(self.reference, x, y)
            with disable_adapters(self.model):
                return sequence_logprobs(self.model, x, y)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        rows = self.sampler.next().tolist()
        x, y = collate_pairs(self.train, rows, self.pad_id, self.device)
        tokens = sum(len(self.train.chosen[i].ids) + len(self.train.rejected[i].ids) - 2 for i in rows)
        return x, y, tokens

    def batch_tokens(self, batch: tuple) -> int:
        return batch[2]

    def pair_stats(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch[:2]  # (2B, T), (2B, T): chosen rows, then rejected rows
        ref = self.reference_logprobs(x, y)  # (2B,) in the same precision as the policy's
        logp = sequence_logprobs(model, x, y)  # (2B,)
        B = x.shape[0] // 2
        loss, stats = dpo_loss(logp[:B], logp[B:], ref[:B], ref[B:], self.beta)
        return loss, {**stats, "chosen_logp": logp[:B].detach(), "rejected_logp": logp[B:].detach()}

    def loss(self, batch: tuple, model: nn.Module | None = None) -> torch.Tensor:
        return self.pair_stats(self.model if model is None else model, batch)[0]

    def evaluate(self) -> dict[str, float]:
        return evaluate_pairs(self, self.val)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["train"])


@torch.no_grad()
def evaluate_pairs(task: DPOTask, pairs: EncodedPairs) -> dict[str, float]:
    """Loss, reward accuracy / margin, mean rewards and log-probs over every pair."""
    sums: dict[str, float] = {k: 0.0 for k in ["loss", *METRICS]}
    for start in range(0, len(pairs), task.eval_batch_size):
        rows = list(range(start, min(start + task.eval_batch_size, len(pairs))))
        x, y = collate_pairs(pairs, rows, task.pad_id, task.device)
        loss, s = task.pair_stats(task.model, (x, y))
        margin = s["chosen_reward"] - s["rejected_reward"]
        sums["loss"] += loss.item() * len(rows)
        sums["reward_accuracy"] += (margin > 0).float().sum().item()
        sums["reward_margin"] += margin.sum().item()
        for key in ("chosen_reward", "rejected_reward", "chosen_logp", "rejected_logp"):
            sums[key] += s[key].sum().item()
    return {k: v / len(pairs) for k, v in sums.items()}


# --------------------------------------------------------------------------- the recipe


def frozen_base(base_dir: Path, device: torch.device) -> nn.Module:
    """Full mode's reference: the base run's weights, frozen, in eval mode."""
    return load_base_model(base_dir)[0].requires_grad_(False).eval().to(device)


def build_config(data: str, base: str, out: str, overrides: list[str], options: dict[str, Any]) -> Config:
    from ..convert.cli import resolve_base

    base_dir = resolve_base(base)
    model = read_model_config(base_dir)
    raw: dict[str, Any] = {
        "model": dataclasses.asdict(model), "tokenizer": {"path": str(base_dir / TOKENIZER)},
        "data": {"path": data}, "out": out,
        "train": {**TRAIN_DEFAULTS, **(FULL_LR if options.get("mode") == "full" else {})},
        "task": {**options, "name": "dpo", "base": str(base_dir)}}
    apply_overrides(raw, overrides)
    return config_from_dict(raw, source="finetune dpo")


def finetune(data: str | None = None, base: str | None = None, out: str | None = None,
             overrides: list[str] | None = None, resume: str | None = None,
             log: Callable[[str], Any] = print, **options: Any) -> Path:
    """DPO-train `base` on the preference pairs in `data`; returns the run directory."""
    cfg = run_config(resume, overrides, lambda: build_config(data, base, out, overrides or [], options)
                     if data and base and out else None, "dpo")
    with open_run(cfg, resume) as run:
        return _finetune_in(run, cfg, log)


def _finetune_in(run: RunDir, cfg: Config, log: Callable[[str], Any]) -> Path:
    """The recipe proper, inside the run directory's scaffold (checks, lock, clean-up)."""
    from ..chat import ChatTemplate
    from ..tokenizers import load_tokenizer

    run_dir, resume = run.path, run.resume
    opts = _from_dict(DPOOptions, cfg.task, prefix="task", source=str(run_dir / CONFIG))
    opts.validate()
    base_dir, tcfg = Path(opts.base), cfg.train
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    device = pick_device(tcfg.device)
    source = run_dir if resume else base_dir
    tokenizer, template = load_tokenizer(source / TOKENIZER), ChatTemplate.from_run(source)
    torch.manual_seed(tcfg.seed)
    if resume:
        model = rebuild_policy(run_dir)
    else:
        model = make_policy(load_base_model(base_dir)[0], opts.mode, opts.lora)
    m = model.config
    max_len = opts.max_len or m.max_len
    train = read_pairs(cfg.data.path)
    if opts.val:
        val = read_pairs(opts.val)
    else:
        train, val = split_off(train, cfg.data.val_fraction, tcfg.seed)
    bos = read_bos(source, tokenizer)
    encoded = {}
    for name, pairs in (("train", train), ("val", val)):
        enc = encode_pairs(pairs, template, tokenizer, max_len, bos)
        if enc.truncated or enc.dropped:
            log(f"{name}: {enc.truncated} of {len(pairs)} pairs truncated to {max_len + 1} "
                f"tokens, {enc.dropped} dropped (a reply truncated away)")
        if not len(enc):
            raise ConfigError(f"{name} split: no pair fits in {max_len} tokens; raise task.max_len")
        encoded[name] = enc
    if opts.epochs:
        tcfg.max_steps = max(1, math.ceil(opts.epochs * len(encoded["train"])
                                          / (tcfg.batch_size * tcfg.grad_accum)))
    cfg.model, cfg.task = m, {**dataclasses.asdict(opts), "name": "dpo"}
    model.to(device)
    log(f"DPO ({opts.mode}, beta {opts.beta}) of {base_dir}: {count_parameters(model) / 1e6:.2f}M "
        f"parameters, {count_parameters(model, trainable_only=True) / 1e6:.3f}M trainable | "
        f"train {len(encoded['train'])} / val {len(encoded['val'])} pairs | device {device}")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    reference = None if opts.mode == "lora" else frozen_base(base_dir, device)
    task = DPOTask(model, reference, encoded["train"], encoded["val"], opts.beta,
                   tcfg.batch_size, opts.eval_batch_size, pad, tcfg.seed, opts.bucket, device)
    trainer = start_trainer(run, task, cfg, base_dir, log)
    if isinstance(trainer, FinishedRun):
        return run_dir  # a resumed run already at train.max_steps: nothing written
    metrics = trainer.fit()
    if metrics:
        log(f"done: step {trainer.step}, val loss {metrics['loss']:.4f}, reward accuracy "
            f"{metrics['reward_accuracy']:.3f} -> {run_dir}")
    if opts.mode == "lora":
        finish_lora(run_dir, model, base_dir, opts.lora.merge, log)
    return run_dir


def finetune_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lmforge finetune dpo",
        description="Align a language model with preference pairs {prompt, chosen, rejected} "
                    "by DPO. Trailing key=value pairs override the config.")
    add_common_arguments(p)
    p.add_argument("--dpo.beta", dest="beta", type=float, help="DPO beta (default 0.1)")
    args = p.parse_intermixed_args(argv)
    options = common_options(args)
    if args.beta is not None:
        options["beta"] = args.beta
    return run_cli(finetune, args, options)


def evaluate_cli(argv: list[str]) -> int:
    """lmforge evaluate DPO_RUN --data PAIRS: reward accuracy and margin on held-out pairs."""
    from ..chat import ChatTemplate
    from ..run import load_run

    p = argparse.ArgumentParser(prog="lmforge evaluate",
                                description="Reward accuracy of a DPO run on preference pairs.")
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    run = load_run(args.run, device=args.device, weights="last")
    opts = _from_dict(DPOOptions, run.config.task, prefix="task", source=args.run)
    max_len = opts.max_len or run.model_config.max_len
    pairs = encode_pairs(read_pairs(args.data), ChatTemplate.from_run(args.run), run.tokenizer,
                         max_len, read_bos(Path(args.run), run.tokenizer))
    pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
    reference = None if has_lora(run.model) else frozen_base(Path(opts.base), run.device)
    task = DPOTask(run.model, reference, pairs, pairs, opts.beta, 1, args.batch_size, pad, 0,
                   device=run.device)
    m = evaluate_pairs(task, pairs)
    print(f"{Path(args.data).name}: {len(pairs)} pairs | reward accuracy {m['reward_accuracy']:.4f} "
          f"| reward margin {m['reward_margin']:.4f} | loss {m['loss']:.4f} | chosen logp "
          f"{m['chosen_logp']:.2f} | rejected logp {m['rejected_logp']:.2f}")
    return 0
