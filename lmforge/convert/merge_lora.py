"""`lmforge convert merge-lora RUN --out RUN2 [--base BASE]`: fold a LoRA run's adapters
into its weights and write a plain run (what `--no-merge` at training left undone).

With adapter.safetensors and the base it was trained on, the adapters are applied to that
base (a different base is refused, naming both); otherwise the run's full checkpoint is
merged. Works for every task's LoRA runs (sft, dpo, lm, classify).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Register `merge-lora` on `lmforge convert`'s subparsers."""
    p = sub.add_parser("merge-lora", help="LoRA run -> plain run with the adapters folded in")
    p.add_argument("run", help="run directory trained with LoRA")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--base", help="base run the adapters were trained on (default: the one "
                                  "recorded in RUN/config.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite a run already at --out")


def run_command(args: argparse.Namespace) -> int | None:
    """Run `merge-lora` when it is the chosen command; None otherwise."""
    if args.direction != "merge-lora":
        return None
    from ..tasks.llm_recipe import merge_run

    out = merge_run(args.run, args.out, base=args.base, force=args.force)
    print(f"merged the adapters of {args.run} -> {out} (a plain run: lmforge chat {out})")
    return 0
