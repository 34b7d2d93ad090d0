"""`lmforge finetune lm --base RUN --data PATH`: continue training a language model on new text.

The base run brings its architecture, tokenizer and weights; everything else is the
pretraining recipe (same trainer, same run directory), so `--resume` works as usual.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config, apply_overrides, config_from_dict, read_yaml
from ..run import CONFIG, TOKENIZER, read_model_config


def finetune_config(base: str | Path, data: str, out: str, overrides: list[str] | None = None) -> Config:
    """The base run's config with its weights and tokenizer as the starting point."""
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
    raw["out"] = out
    apply_overrides(raw, overrides or [])
    return config_from_dict(raw, source=f"{base}/{CONFIG}")


def finetune(base: str, data: str, out: str, overrides: list[str] | None = None) -> Path:
    """Fine-tune the language model in `base` on `data`; returns the new run directory."""
    from ..pretrain import pretrain

    return pretrain(finetune_config(base, data, out, overrides))


def finetune_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge finetune lm",
                                     description="Continue training a language model on new text.")
    parser.add_argument("--base", required=True, help="run directory (lmforge or converted HF)")
    parser.add_argument("--data", required=True, help="text file, folder, glob or .jsonl")
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    finetune(args.base, args.data, args.out, args.overrides)
    return 0
