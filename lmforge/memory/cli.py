"""`lmforge estimate-memory RUN_OR_CONFIG --batch B --seq T [--mode lora|full] [key=value ...]`"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..config import (Config, ConfigError, ModelConfig, apply_overrides, config_from_dict,
                      read_yaml)
from .check import available_bytes, predict


def load_run_or_config(path: str, overrides: list[str]) -> Config:
    """A run directory (model_config.json, config.yaml when there) or a YAML recipe, overridden."""
    p = Path(path)
    if p.is_dir():
        model_file = p / "model_config.json"
        if not model_file.is_file():
            raise ConfigError(f"{p} is not a run directory: it has no model_config.json")
        try:
            model_data = json.loads(model_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{model_file} line {err.lineno}: not valid JSON") from None
        data = read_yaml(p / "config.yaml") if (p / "config.yaml").is_file() else {}
        data["model"] = model_data
    elif p.is_file():
        data = read_yaml(p)
    else:
        raise ConfigError(f"{path!r} is neither a run directory nor a config file")
    apply_overrides(data, overrides)
    cfg = config_from_dict(data, source=str(p))
    if cfg.model.vocab_size <= 0:
        raise ConfigError(f"{path}: model.vocab_size is not set (the tokenizer sets it when a "
                          "run starts); pass model.vocab_size=N")
    return cfg


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge estimate-memory", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lmforge estimate-memory runs/smollm2 --batch 8 --seq 512 --mode lora\n  lmforge estimate-memory configs/shakespeare-char-gpt.yaml --batch 64 --seq 256 train.activation_checkpointing=true",
        description="Predict a training run's peak memory: weights, gradients, optimizer state, "
                    "activations and logits. Trailing key=value pairs override the config, e.g. "
                    "train.activation_checkpointing=true train.chunked_ce=true.")
    parser.add_argument("source", metavar="RUN_OR_CONFIG", help="run directory or YAML recipe")
    parser.add_argument("--batch", type=int, help="micro-batch rows (default train.batch_size)")
    parser.add_argument("--seq", type=int, help="tokens per row (default model.max_len)")
    parser.add_argument("--mode", choices=("full", "lora"),
                        help="train everything or LoRA adapters only (default: lora when the "
                             "model config has extra.lora)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"),
                        help="= train.precision")
    parser.add_argument("--optimizer", help="= train.optimizer")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda: whose available memory to compare with (default cpu)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    for key, value in (("train.batch_size", args.batch), ("train.precision", args.precision),
                       ("train.optimizer", args.optimizer)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_run_or_config(args.source, overrides)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here")
    # a run directory with weights is a base to fine-tune: its file is read in at start-up
    from_file = Path(args.source).is_dir() and (Path(args.source) / "model.safetensors").is_file()
    est = predict(cfg.model, cfg.train, device, seq=args.seq, mode=args.mode,
                  loads_weights=from_file or bool(cfg.train.init_from))
    seq = args.seq or cfg.model.max_len
    mode = args.mode or ("lora" if cfg.model.extra.get("lora") else "full")
    print(f"{cfg.model.arch} | {mode} | batch {cfg.train.batch_size} x seq {seq} | "
          f"{cfg.train.precision} | {cfg.train.optimizer} | activation checkpointing "
          f"{'every ' + str(cfg.train.checkpoint_every) if cfg.train.activation_checkpointing else 'off'}"
          f" | chunked CE {'on' if cfg.train.chunked_ce else 'off'}"
          f"{' | int8 base' if cfg.train.base_dtype == 'int8' else ''}")
    print(est.table())
    free = available_bytes(device)
    if free is not None:
        room = free + (est.get("runtime") if device.type == "cpu" else 0.0)
        verdict = "fits" if est.peak <= room else "does NOT fit (docs/memory.md: what to try)"
        print(f"available on {device.type}: {room / 2**20:.1f} MiB -> {verdict}")
    return 0
