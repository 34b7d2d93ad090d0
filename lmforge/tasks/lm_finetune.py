"""`lmforge finetune lm --base RUN --data PATH`: continue training a language model on new text.

The base run brings its architecture, tokenizer and weights; everything else is the
pretraining recipe (same trainer, same run directory), so `--resume` works as usual.
`--mode lora` (with `--lora.rank`, `--lora.targets` ...) trains low-rank adapters only and
writes them to RUN/adapter.safetensors as well (merge with `lmforge convert merge-lora`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import Config, apply_overrides, config_from_dict, read_yaml
from ..run import CONFIG, TOKENIZER, read_model_config
from .llm_recipe import LoRASettings


def finetune_config(base: str | Path, data: str, out: str, overrides: list[str] | None = None,
                    lora: dict[str, Any] | None = None) -> Config:
    """The base run's config with its weights and tokenizer as the starting point; `lora`
    (rank, alpha, dropout, targets) adds adapters recorded in model.extra.lora."""
    from ..convert.cli import resolve_base

    base = resolve_base(base)  # a Hugging Face GPT-2 folder works too
    model = read_model_config(base)
    raw = read_yaml(base / CONFIG) if (base / CONFIG).is_file() else {}
    raw = {k: v for k, v in raw.items() if k in ("train", "data")}
    raw.setdefault("train", {}).update({"init_from": str(base), "warmup_steps": 20})
    raw["train"].setdefault("max_steps", 500)
    raw.setdefault("data", {})["path"] = data
    raw["tokenizer"] = {"path": str(base / TOKENIZER)}
    raw["model"] = {k: v for k, v in model.__dict__.items()}
    if lora is not None:
        raw["model"]["extra"] = {**model.extra, "lora": LoRASettings(**lora).options()}
    raw["out"] = out
    apply_overrides(raw, overrides or [])
    return config_from_dict(raw, source=f"{base}/{CONFIG}")


def finetune(base: str, data: str, out: str, overrides: list[str] | None = None,
             lora: dict[str, Any] | None = None) -> Path:
    """Fine-tune the language model in `base` on `data` (LoRA when `lora` is given);
    returns the new run directory."""
    from ..pretrain import pretrain
    from ..run import load_run
    from .llm_recipe import finish_lora

    cfg = finetune_config(base, data, out, overrides, lora)
    run_dir = pretrain(cfg)
    if lora is not None:
        finish_lora(run_dir, load_run(run_dir, device="cpu", weights="last").model,
                    Path(cfg.train.init_from), merge=False)
    return run_dir


def finetune_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge finetune lm",
                                     description="Continue training a language model on new text.")
    parser.add_argument("--base", required=True, help="run directory (lmforge or converted HF)")
    parser.add_argument("--data", required=True, help="text file, folder, glob or .jsonl")
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=["full", "lora"], default="full")
    parser.add_argument("--lora.rank", dest="lora_rank", type=int, default=16)
    parser.add_argument("--lora.alpha", dest="lora_alpha", type=float, default=32.0)
    parser.add_argument("--lora.dropout", dest="lora_dropout", type=float, default=0.05)
    parser.add_argument("--lora.targets", dest="lora_targets", default="",
                        help="comma-separated layer names (default: every linear layer)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    lora = None
    if args.mode == "lora":
        lora = {"rank": args.lora_rank, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                "targets": [t.strip() for t in args.lora_targets.split(",") if t.strip()]}
    finetune(args.base, args.data, args.out, args.overrides, lora)
    return 0
