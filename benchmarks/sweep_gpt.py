"""Sweep figures for the default char GPT (configs/shakespeare-char-gpt.yaml, sweeps/gpt-small.yaml).

Four measurements, each a real `lmforge` command in its own process:

  1. the default recipe trained once at the per-trial budget: its best val loss;
  2. a sweep of N trials with the median pruner: best val loss, trials per hour;
  3. the same sweep without pruning: trials per hour (the speed-up from pruning);
  4. the pruned sweep again with two worker processes on one SQLite study: wall time.

Every process gets `train.threads = cores // workers`, so one worker and two workers use
the machine alike (two workers on two cores each get one thread, as on two machines).

    python benchmarks/sweep_gpt.py                         # 40 trials x 1 minute (~2.5 h)
    python benchmarks/sweep_gpt.py --trials 8 --budget 20s # a quick check
    python benchmarks/sweep_gpt.py --phases plain --plain-trials 10   # one measurement
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "shakespeare-char-gpt.yaml"
SPACE = ROOT / "sweeps" / "gpt-small.yaml"
sys.path.insert(0, str(ROOT))


def lmforge(args: list[str], threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            sys.exit(f"command failed ({p.returncode}):\n{out[-3000:]}")


def threads_for(args: argparse.Namespace, workers: int) -> int:
    return args.threads or max(1, (os.cpu_count() or 1) // workers)


def sweep(out: Path, args: argparse.Namespace, pruner: str, workers: int) -> dict[str, float]:
    threads = threads_for(args, workers)
    common = [f"train.threads={threads}", f"train.eval_every={args.eval_every}",
              "train.eval_batches=10", "train.sample_tokens=0"]
    t0 = time.perf_counter()
    first = lmforge(["sweep", "--config", str(CONFIG), "--space", str(SPACE), "--out", str(out),
                     "--trials", str(args.trials), "--budget", args.budget, "--pruner", pruner,
                     "--seed", str(args.seed), *common], threads)
    procs = [first]
    while workers > 1 and not (out / "sweep.json").exists() and first.poll() is None:
        time.sleep(0.2)
    procs += [lmforge(["sweep", "--resume", str(out)], threads) for _ in range(workers - 1)]
    finish(procs)
    wall = time.perf_counter() - t0
    with open(out / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    values = [float(r["value"]) for r in rows if r["state"] == "complete"]

    def mean_seconds(state: str) -> float:
        s = [float(r["seconds"]) for r in rows if r["state"] == state and r["seconds"]]
        return sum(s) / len(s) if s else float("nan")

    return {"wall_s": wall, "trials": len(rows), "pruned": sum(r["state"] == "pruned" for r in rows),
            "best": min(values) if values else float("nan"), "per_hour": len(rows) / wall * 3600,
            "s_complete": mean_seconds("complete"), "s_pruned": mean_seconds("pruned")}


def default_recipe(out: Path, args: argparse.Namespace) -> float:
    from lmforge.sweep import parse_budget

    threads = threads_for(args, 1)
    finish([lmforge(["pretrain", "--config", str(CONFIG), "--out", str(out),
                     *parse_budget(args.budget).overrides(), f"train.threads={threads}",
                     f"train.eval_every={args.eval_every}", "train.eval_batches=10",
                     "train.sample_tokens=0", "train.progress=false"], threads)])
    with open(out / "metrics.csv") as fh:
        return min(float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "val")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--budget", default="1m", help="per trial: training time (1m), or steps "
                                                          "(300steps) on a busy machine")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (default: cores // workers)")
    parser.add_argument("--out", help="keep the sweeps here (default: a temp folder)")
    parser.add_argument("--phases", default="default,pruned,plain,two",
                        help="which measurements to run (comma-separated; default: all four)")
    parser.add_argument("--plain-trials", type=int, default=0,
                        help="trials of the sweep without pruning (default: --trials); each runs "
                             "its whole budget, so a few give its trials per hour")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    root = Path(args.out or tempfile.mkdtemp(prefix="lmforge-sweep-bench-"))
    print(f"{args.trials} trials x {args.budget}, eval every {args.eval_every} steps, "
          f"{os.cpu_count()} cores -> {root}", flush=True)
    base = None
    if "default" in phases:
        base = default_recipe(root / "default", args)
        print(f"default recipe: best val loss {base:.4f}", flush=True)
    results = {}
    for key, name, pruner, workers, trials in (
            ("pruned", "median pruner, 1 worker", "median", 1, args.trials),
            ("plain", "no pruning, 1 worker", "none", 1, args.plain_trials or args.trials),
            ("two", "median pruner, 2 workers", "median", 2, args.trials)):
        if key not in phases:
            continue
        r = sweep(root / name.replace(", ", "-").replace(" ", "_"),
                  argparse.Namespace(**{**vars(args), "trials": trials}), pruner, workers)
        results[key] = r
        print(f"{name}: best val loss {r['best']:.4f} | {r['trials']} trials ({r['pruned']} pruned) "
              f"in {r['wall_s']:.0f}s = {r['per_hour']:.0f} trials/hour | mean trial "
              f"{r['s_complete']:.0f}s complete" + (f", {r['s_pruned']:.0f}s pruned" if r["pruned"] else ""),
              flush=True)
    if results and base is not None:
        best = min(r["best"] for r in results.values())
        print(f"\nbest found {best:.4f} vs default {base:.4f} at {args.budget} per run")
    if "pruned" in results and "plain" in results:
        print(f"pruning: {results['pruned']['per_hour'] / results['plain']['per_hour']:.2f}x "
              f"trials per hour")
    if "pruned" in results and "two" in results:
        print(f"two workers: {results['two']['wall_s'] / results['pruned']['wall_s']:.2f}x the "
              f"wall time of one")


if __name__ == "__main__":
    main()
