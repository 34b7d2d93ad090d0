"""Translation benchmark: Multi30k, Transformer and attention-RNN recipes on a wall-time budget.

    python benchmarks/translate.py --data ../shared/data/multi30k --src de --tgt en --budget-min 90
    python benchmarks/translate.py --models rnn --src en --tgt de --budget-min 10   # the other way

For each model: a short calibration run measures seconds per training step on this machine,
the step count is set so that the cosine schedule ends at the budget (at most the recipe's
train.max_steps; the Trainer's `time_budget_s` stops it at the budget in any case), the model
trains, and the best checkpoint (by greedy validation BLEU) decodes the test split with beam
search. The machine must be otherwise idle: the calibration assumes the speed it measured. Printed: sacreBLEU BLEU and
chrF (default 13a tokenization, cased, detokenized output against the raw references),
training time, target tokens per second, parameters and epochs.

Published from-scratch results on test_2016_flickr de->en (bentrevett/pytorch-seq2seq, GPU,
10 epochs, spaCy tokens, lowercased, so only roughly comparable): LSTM 13.8, GRU + Bahdanau
28.3, ConvS2S 34.1, Transformer (3 layers, 256 wide) 36.5 BLEU. Targets of this benchmark on
2 CPU cores within 90 minutes of training: Transformer >= 33, attention-RNN >= 27 BLEU.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPES = {"transformer": ROOT / "configs/translate-transformer.yaml",
           "rnn": ROOT / "configs/translate-rnn-attention.yaml"}
TARGETS = {"transformer": 33.0, "rnn": 27.0}  # BLEU, de->en, 2 CPU cores, 90 minutes


def seconds_per_step(run_dir: Path) -> float:
    """Training seconds per step between the first and the last logged train rows."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    if len(rows) < 2:
        raise RuntimeError(f"{run_dir}: calibration logged too few steps")
    first, last = rows[0], rows[-1]
    return (float(last["elapsed_s"]) - float(first["elapsed_s"])) / (int(last["step"]) - int(first["step"]))


def training_summary(run_dir: Path) -> dict[str, float]:
    """Steps, training seconds and median target tokens/s from metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    rates = sorted(float(r["tokens_per_s"]) for r in rows if r["tokens_per_s"])
    return {"steps": int(rows[-1]["step"]), "train_s": float(rows[-1]["elapsed_s"]),
            "tokens_per_s": rates[len(rates) // 2] if rates else 0.0}


def run_model(name: str, args: argparse.Namespace) -> dict[str, object]:
    """Calibrate, train and test one recipe; returns its row of the results table."""
    from lmforge.config import load_config
    from lmforge.tasks.seq2seq import evaluate, finetune, load_seq2seq

    out = Path(args.out) / f"{name}-{args.src}-{args.tgt}"
    common = [f"data.path={args.data}", f"task.src={args.src}", f"task.tgt={args.tgt}",
              "train.progress=false", *args.override]
    if args.threads:
        common.append(f"train.threads={args.threads}")
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    budget = args.budget_min * 60.0
    calib_dir = out.with_name(out.name + "-calibrate")
    shutil.rmtree(calib_dir, ignore_errors=True)
    print(f"\n=== {name}: calibrating ({args.calibrate_steps} steps) ===", flush=True)
    finetune(config=str(RECIPES[name]), out=calib_dir, task="translate",
             overrides=common + [f"train.max_steps={args.calibrate_steps}", "train.eval_every=0",
                                 "train.log_every=10", "task.eval_decode=0"],
             log=lambda *a: None)
    per_step = seconds_per_step(calib_dir)
    shutil.rmtree(calib_dir, ignore_errors=True)
    recipe = load_config(RECIPES[name])
    steps = int(budget * 0.97 / per_step)
    # the recipe's max_steps caps a fast machine: more epochs than that only overfit
    cap = recipe.train.max_steps if args.max_steps == 0 else args.max_steps
    if cap > 0:
        steps = min(steps, cap)
    eval_every = max(100, min(recipe.train.eval_every, steps // 6))
    warmup = min(recipe.train.warmup_steps, max(1, steps // 10))
    print(f"{per_step:.3f} s/step -> {steps} steps in {args.budget_min:g} min "
          f"(eval every {eval_every})", flush=True)
    t0 = time.perf_counter()
    finetune(config=str(RECIPES[name]), out=out, task="translate",
             overrides=common + [f"train.max_steps={steps}", f"train.time_budget_s={budget}",
                                 f"train.eval_every={eval_every}", f"train.warmup_steps={warmup}"])
    wall = time.perf_counter() - t0
    summary = training_summary(out)
    run = load_seq2seq(out)
    result = evaluate(run, args.data, args.split, beams=args.beams, limit=args.limit, log=print)
    from lmforge.models.build import count_parameters

    batches_per_epoch = 29000 / recipe.train.batch_size
    return {"model": name, "params_m": count_parameters(run.model) / 1e6, **summary,
            "epochs": summary["steps"] / batches_per_epoch, "wall_s": wall,
            "bleu": result["bleu"], "chrf": result["chrf"], "beams": result["beams"],
            "decode_s": result["decode_seconds"], "run": str(out)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for each model and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/multi30k"))
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--models", default="transformer,rnn", help="comma list: transformer, rnn")
    parser.add_argument("--budget-min", type=float, default=90.0, help="training minutes per model")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="cap the step count (0: the recipe's train.max_steps, -1: the budget decides)")
    parser.add_argument("--calibrate-steps", type=int, default=60)
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0, help="score only the first N test pairs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    parser.add_argument("--out", default=str(ROOT / "runs/bench-translate"))
    parser.add_argument("--keep", action="store_true", help="do not delete an existing run folder")
    parser.add_argument("--override", action="append", default=[], metavar="key=value",
                        help="extra config override for both models (repeatable)")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in names:
        if name not in RECIPES:
            parser.error(f"unknown model {name!r}; choose from {', '.join(RECIPES)}")
    results = [run_model(name, args) for name in names]
    print(f"\nMulti30k {args.src}->{args.tgt}, {args.split}, beam {args.beams}, "
          f"budget {args.budget_min:g} min per model")
    print(f"{'model':<12} {'params':>7} {'steps':>6} {'epochs':>6} {'train':>8} {'tok/s':>7} "
          f"{'BLEU':>6} {'chrF':>6} {'target':>7}")
    for r in results:
        target = TARGETS[r["model"]] if (args.src, args.tgt) == ("de", "en") else float("nan")
        print(f"{r['model']:<12} {r['params_m']:>6.1f}M {r['steps']:>6} {r['epochs']:>6.1f} "
              f"{r['train_s'] / 60:>7.1f}m {r['tokens_per_s']:>7.0f} {r['bleu']:>6.2f} "
              f"{r['chrf']:>6.2f} {target:>7.1f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"results-{args.src}-{args.tgt}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
