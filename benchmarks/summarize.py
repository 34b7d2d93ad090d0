"""Summarization benchmark: SciTLDR (abstract -> one-sentence TLDR), ROUGE-1/2/L on test.

    python benchmarks/summarize.py --data ../shared/data/scitldr
    python benchmarks/summarize.py --models lead,extractive --budget-min 5

Rows, each scored against the first reference and as the maximum over all references (test
has ~3.2 references per paper), with Google's rouge-score (Porter stemmer):

    lead-1       the first sentence of the abstract (computed here, about 25.9 / 9.3 / 20.1
                 against the first reference)
    extractive   configs/summarize-extractive.yaml: a sentence scorer picks one sentence
    pointer      configs/summarize-pointer.yaml: an abstractive pointer-generator, beam search

Target: the extractive model beats Lead-1 on all three; the abstractive model's place is
reported (1,992 training pairs is very little for a from-scratch generator).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPES = {"extractive": ROOT / "configs/summarize-extractive.yaml",
           "pointer": ROOT / "configs/summarize-pointer.yaml"}
NAMES = ("rouge1", "rouge2", "rougeL")


def lead_row(args: argparse.Namespace) -> dict[str, object]:
    """Lead-1 ROUGE on the test split."""
    from lmforge.data.parallel import read_split
    from lmforge.eval.metrics import rouge
    from lmforge.tasks.extractive import lead

    split = read_split(args.data, args.split)
    n = len(split) if args.limit <= 0 else min(args.limit, len(split))
    hyps = lead(split.sources[:n], k=1)
    refs = split.references[:n]
    return {"model": "lead-1", "first": rouge(hyps, [[r[0]] for r in refs]), "max": rouge(hyps, refs),
            "train_s": 0.0}


def train_row(name: str, args: argparse.Namespace) -> dict[str, object]:
    """Train one recipe and score it on the test split."""
    from lmforge.tasks.seq2seq import finetune

    out = Path(args.out) / name
    if out.exists():
        shutil.rmtree(out)
    overrides = [f"data.path={args.data}", "train.progress=false", *args.override]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    if args.budget_min:
        overrides.append(f"train.time_budget_s={args.budget_min * 60}")
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    t0 = time.perf_counter()
    finetune(task="summarize", config=str(RECIPES[name]), out=out, overrides=overrides)
    wall = time.perf_counter() - t0
    if name == "extractive":
        from lmforge.tasks.extractive import evaluate
        result = evaluate(out, args.data, args.split, limit=args.limit)
    else:
        from lmforge.tasks.seq2seq import evaluate
        result = evaluate(out, args.data, args.split, beams=args.beams, limit=args.limit)
    return {"model": name, "first": {k: result[f"{k}_first_ref"] for k in NAMES},
            "max": {k: result[k] for k in NAMES}, "train_s": wall, "outputs": result["outputs"]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark rows and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/scitldr"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--models", default="lead,extractive,pointer")
    parser.add_argument("--budget-min", type=float, default=0.0,
                        help="training minutes per model (0 = the recipe's steps)")
    parser.add_argument("--max-steps", type=int, default=0, help="override the recipes' train.max_steps")
    parser.add_argument("--beams", type=int, default=None, help="pointer beam size (default: the recipe's)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N test papers")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "runs/bench-summarize"))
    parser.add_argument("--override", action="append", default=[], metavar="key=value")
    args = parser.parse_args(argv)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name == "lead":
            rows.append(lead_row(args))
        elif name in RECIPES:
            rows.append(train_row(name, args))
        else:
            parser.error(f"unknown model {name!r}; choose from lead, {', '.join(RECIPES)}")
    print(f"\nSciTLDR-A {args.split}: ROUGE-1 / ROUGE-2 / ROUGE-L (F, stemmed)")
    print(f"{'model':<12} {'first reference':>24} {'max over references':>24} {'train':>8}")
    for r in rows:
        first = " / ".join(f"{r['first'][k]:5.2f}" for k in NAMES)
        best = " / ".join(f"{r['max'][k]:5.2f}" for k in NAMES)
        print(f"{r['model']:<12} {first:>24} {best:>24} {r['train_s'] / 60:>7.1f}m")
    lead = next((r for r in rows if r["model"] == "lead-1"), None)
    ext = next((r for r in rows if r["model"] == "extractive"), None)
    if lead and ext:
        beats = all(ext["first"][k] > lead["first"][k] for k in NAMES)
        print(f"extractive beats Lead-1 on all three (first reference): {'yes' if beats else 'NO'}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
