"""Command line: `lmforge SUBCOMMAND ...`, a thin layer over the Python API.

Each subcommand is a function `cli(argv) -> exit code` named in COMMANDS and imported only
when used. Errors a user can fix print one line, `lmforge: error: ...`, and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("lmforge.cli:pretrain_cli", "train a language model from scratch"),
    "generate": ("lmforge.generate:cli", "generate text from a run"),
    "finetune": ("lmforge.finetune:cli", "fine-tune for classification, seq2seq or lm"),
    "evaluate": ("lmforge.evaluate:cli", "score a run on a dataset"),
    "predict": ("lmforge.tasks.classify_infer:predict_cli", "classify texts with a classifier run"),
    "compare": ("lmforge.compare:cli", "train several architectures on one budget and compare"),
    "tokenizer": ("lmforge.tokenizers.cli:cli", "train, encode and decode with tokenizers"),
    "glove": ("lmforge.convert.glove:cli", "train GloVe vectors, nearest words, analogies"),
    "convert": ("lmforge.convert.cli:cli", "Hugging Face checkpoints in and out"),
    "chat": ("lmforge.chat.cli:cli", "chat with a run in the terminal (multi-turn, streaming)"),
    "serve": ("lmforge.serve.cli:cli", "serve a run over HTTP: OpenAI API, batching, chat page"),
    "estimate-memory": ("lmforge.memory.cli:cli", "predict a training run's peak memory"),
    "sweep": ("lmforge.sweep.cli:cli", "search hyperparameters with Optuna (docs/sweep.md)"),
    "config": ("lmforge.config_cli:cli", "show a resolved config, list keys, diff two runs"),
    "data": ("lmforge.audit.cli:data_cli", "audit and clean a corpus (PII, duplicates, languages)"),
    "audit": ("lmforge.audit.cli:audit_cli", "canaries, memorization, bias and counterfactual probes"),
}


def pretrain_cli(argv: list[str]) -> int:
    """lmforge pretrain [--config FILE] [--data PATH] [--out DIR] [--resume RUN] [key=value ...]"""
    parser = argparse.ArgumentParser(
        prog="lmforge pretrain", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lmforge pretrain --out runs/shakespeare\n"
               "  lmforge pretrain --config configs/shakespeare_char.yaml --out runs/s1 train.max_steps=500\n"
               "  lmforge pretrain --resume runs/s1 train.max_steps=1000",
        description="Train a language model from scratch (default: a char-level GPT on the "
                    "bundled Tiny Shakespeare). Trailing key=value pairs override the config, "
                    "e.g. model.n_layers=6 train.lr=3e-4. Every key, its type, default and "
                    "meaning: `lmforge config keys model|train|data|tokenizer` or docs/config.md.")
    parser.add_argument("--config", help="YAML recipe (see configs/)")
    parser.add_argument("--data", help="corpus: a text file, folder, glob or .jsonl (= data.path)")
    parser.add_argument("--out", help="run directory to create (= out)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    from .config import load_config
    from .pretrain import pretrain, resume_config

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.resume:
        cfg = resume_config(args.resume, overrides)
    else:
        if args.out:
            overrides.append(f"out={args.out}")
        cfg = load_config(args.config, overrides)
    from pathlib import Path

    from .config import ConfigError
    from .train import distributed
    from .train.checkpoint import TRAINER_STATE

    if not args.resume and (Path(cfg.out) / TRAINER_STATE).exists():
        raise ConfigError(f"{cfg.out} already holds a run; resume it with --resume {cfg.out} "
                          "or choose another --out")
    try:
        pretrain(cfg, resume=bool(args.resume))
    finally:
        distributed.cleanup()
    return 0


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: lmforge COMMAND [options]   (lmforge COMMAND --help for details)",
             "       lmforge --version", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lmforge` console script and `python -m lmforge`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)  # no command: a usage error
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"lmforge {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lmforge: error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    from .config import ConfigError
    from .train.checkpoint import CheckpointError
    from .train.loop import Interrupted, TrainingDiverged

    try:
        func = getattr(importlib.import_module(module_name), func_name)
        code = int(func(rest) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (ConfigError, CheckpointError, TrainingDiverged, FileNotFoundError, ValueError) as err:
        print(f"lmforge: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a read-only file system, a full disk, no permission: one line
        where = f"{err.filename}: " if err.filename else ""
        print(f"lmforge: error: cannot complete {name}: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"lmforge: interrupted at step {err.step}; checkpoint saved, continue with "
              f"`{resume_command(argv, err.run_dir)}`", file=sys.stderr)
        return 128 + err.signum  # 130 after Ctrl-C, 143 after SIGTERM, as shells report
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130


def resume_command(argv: list[str], run_dir) -> str:
    """The command that continues an interrupted run: the same subcommand (and finetune
    kind) with --resume, e.g. `lmforge finetune seq2seq --resume RUN`."""
    words = argv[:2] if argv[0] == "finetune" and len(argv) > 1 else argv[:1]
    return " ".join(["lmforge", *words, "--resume", str(run_dir)])


def _quiet_broken_pipe() -> int:
    """The reader of our stdout went away (`lmforge generate ... | head`): stop quietly, as Unix
    tools do. stdout is pointed at /dev/null so the interpreter's final flush cannot raise."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
