"""Differential privacy, memorization and counterfactual figures, with short runs.

    python benchmarks/dp.py --out bench-dp                      # the figures of docs/responsible.md
    python benchmarks/dp.py --out bench-dp --quick              # smaller still (minutes on 2 cores)

1. SST-2 test accuracy of a Kim-2014 CNN classifier (see SST2 below for why not the LSTM
   recipe), `--sst2-epochs` epochs, at epsilon 1, 3, 8 and without DP.
2. Tiny Shakespeare val loss of a char GPT (rotary positions, which Opacus supports) after
   `--lm-steps` steps at epsilon 1, 3, 8 and without DP.
3. Canary exposure: 10 canaries (6 digits) planted 5 times each in Tiny Shakespeare, the same
   GPT and steps without DP and at epsilon 8.
4. Counterfactual flip rate of the SST-2 recipe configs/sentiment-lstm.yaml (`--epochs`
   epochs, no DP) on the shipped templates.

Everything is CPU-sized on purpose (the numbers are for comparing settings with each other,
not for comparing with published results); results go to OUT/results-<parts>.json and are printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmforge.audit.counterfactual import audit_counterfactual  # noqa: E402
from lmforge.audit.memorization import audit_memorization, plant_canaries  # noqa: E402
from lmforge.config import load_config  # noqa: E402
from lmforge.pretrain import pretrain  # noqa: E402
from lmforge.tasks.classify import finetune  # noqa: E402

EPSILONS = [None, 8.0, 3.0, 1.0]


def quiet(*args, **kwargs) -> None:
    pass


def last_val(run: Path, column: str) -> float:
    with open(run / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    return float(rows[-1][column])


# The recipe's Keras settings (RMSprop 1e-3, batch 32) do not survive DP noise, and Opacus's
# DPLSTM is a Python loop over time steps (~20x slower than the fused LSTM on CPU): the DP
# comparison uses a Kim-2014 CNN (Conv1d, per-example gradients by unfolding), a 2,000-word
# vocabulary (Opacus materialises a per-example embedding gradient of batch x vocab x width),
# batch 256 and Adam at 2e-3 (at 5e-3 Adam rescales the pure-noise gradient of every embedding
# row absent from a batch into a full-size step and the DP runs stayed at chance; SGD at 0.5
# with momentum did not train even without DP), the same for all four runs.
SST2 = ["train.progress=false", "train.threads=1", "train.batch_size=256", "train.optimizer=adam",
        "train.lr=2e-3", "train.weight_decay=0", "train.log_every=5",
        "model.arch=cnn", "model.filter_widths=[3,4,5]", "model.pooling=max", "task.init=default",
        "tokenizer.vocab_size=2000"]


def sst2(out: Path, data: Path, epochs: int, eps: float | None) -> dict:
    dp = [f"train.dp.epsilon={eps}", "train.dp.delta=1e-5", "train.dp.max_grad_norm=1.0"] if eps else []
    run = out / f"sst2-{eps or 'nodp'}"
    t0 = time.perf_counter()
    finetune(data, config=ROOT / "configs/sentiment-lstm.yaml", out=run, epochs=epochs,
             overrides=[*SST2, *dp], log=quiet)
    summary = json.loads((run / "summary.json").read_text())
    return {"epsilon": eps, "test_accuracy": summary["test"]["accuracy"],
            "spent_epsilon": last_val(run, "epsilon") if eps else None,
            "seconds": round(time.perf_counter() - t0, 1), "run": str(run)}


LM = ["model.arch=gpt", "model.positional=rotary", "model.d_model=64", "model.n_layers=2",
      "model.n_heads=4", "model.max_len=64", "train.batch_size=32", "train.lr=3e-3",
      "train.warmup_steps=20", "train.eval_batches=10", "train.progress=false",
      "train.sample_tokens=0", "train.threads=1"]


def shakespeare(out: Path, data: str, steps: int, eps: float | None, name: str) -> dict:
    dp = [f"train.dp.epsilon={eps}"] if eps else []
    run = out / name
    t0 = time.perf_counter()
    cfg = load_config(None, [*LM, f"data.path={data}", f"out={run}", f"train.max_steps={steps}",
                             f"train.eval_every={steps}", f"data.cache_dir={out / 'cache'}", *dp])
    pretrain(cfg, log=quiet)
    return {"epsilon": eps, "val_loss": last_val(run, "loss"),
            "spent_epsilon": last_val(run, "epsilon") if eps else None,
            "seconds": round(time.perf_counter() - t0, 1), "run": str(run)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-dp")
    p.add_argument("--sst2", default="/work/shared/data/sst2")
    p.add_argument("--shakespeare", default="")  # "" = the bundled copy
    p.add_argument("--epochs", type=int, default=3, help="the LSTM recipe for the flip rate")
    p.add_argument("--sst2-epochs", type=int, default=3, help="the DP comparison")
    p.add_argument("--lm-steps", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="1 epoch, 200 LM steps")
    p.add_argument("--only", default="sst2,lm,canary,counterfactual")
    a = p.parse_args()
    if a.quick:
        a.epochs, a.sst2_epochs, a.lm_steps = 1, 1, 200
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"epochs": a.epochs, "sst2_epochs": a.sst2_epochs, "lm_steps": a.lm_steps}
    only = a.only.split(",")
    if "sst2" in only:
        results["sst2"] = [sst2(out, Path(a.sst2), a.sst2_epochs, eps) for eps in EPSILONS]
        for r in results["sst2"]:
            print(f"SST-2 eps={r['epsilon']}: test accuracy {r['test_accuracy']:.4f} ({r['seconds']}s)", flush=True)
    if "lm" in only:
        results["shakespeare"] = [shakespeare(out, a.shakespeare, a.lm_steps, eps, f"lm-{eps or 'nodp'}")
                                  for eps in EPSILONS]
        for r in results["shakespeare"]:
            print(f"Shakespeare eps={r['epsilon']}: val loss {r['val_loss']:.4f} ({r['seconds']}s)", flush=True)
    if "canary" in only:
        planted = out / "planted"
        if not planted.exists():
            from lmforge.data.corpus import BUNDLED_CORPUS

            plant_canaries(a.shakespeare or BUNDLED_CORPUS, planted, count=10, repeats=5, digits=6,
                           seed=0, log=quiet)
        rows = []
        for eps in (None, 8.0):
            lm = shakespeare(out, str(planted), a.lm_steps, eps, f"canary-{eps or 'nodp'}")
            mem = audit_memorization(lm["run"], planted / "canaries.json", str(planted),
                                     max_candidates=2000, samples=10, log=quiet)
            rows.append({"epsilon": eps, "val_loss": lm["val_loss"],
                         "mean_exposure": mem["mean_exposure"],
                         "max_exposure": mem["canaries"][0]["max_exposure"],
                         "greedy_completed": mem["greedy_completed"],
                         "extraction": {k: v for k, v in mem["extraction"].items() if k != "examples"}})
            print(f"canaries eps={eps}: mean exposure {mem['mean_exposure']:.2f} bits, greedy "
                  f"{mem['greedy_completed']}/10, val loss {lm['val_loss']:.4f}", flush=True)
        results["canaries"] = rows
    if "counterfactual" in only:
        # the recipe's own model (configs/sentiment-lstm.yaml, no DP), trained for --epochs
        run = out / "sst2-lstm"
        if not run.exists():
            finetune(Path(a.sst2), config=ROOT / "configs/sentiment-lstm.yaml", out=run,
                     epochs=a.epochs, overrides=["train.progress=false", "train.threads=1"], log=quiet)
        test = json.loads((run / "summary.json").read_text())["test"]["accuracy"]
        cf = audit_counterfactual(run, log=quiet)
        results["counterfactual"] = {"model": "configs/sentiment-lstm.yaml", "epochs": a.epochs,
                                     "test_accuracy": test, "flip_rate": cf["flip_rate"], "by_slot": cf["by_slot"],
                                     "comparisons": cf["comparisons"], "top_pairs": cf["pairs"][:5]}
        print(f"counterfactual flip rate (SST-2 LSTM, no DP): {cf['flip_rate']:.2%} "
              f"{ {k: round(v['flip_rate'], 4) for k, v in cf['by_slot'].items()} }", flush=True)
    (out / f"results-{'-'.join(only)}.json").write_text(json.dumps(results, indent=2))
    print(f"-> {out}/results-{'-'.join(only)}.json")


if __name__ == "__main__":
    main()
