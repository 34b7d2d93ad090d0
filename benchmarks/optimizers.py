"""Optimizers side by side: what each costs (steps, seconds) and buys (loss, accuracy).

(a) Linear probe: L2-regularised logistic regression on frozen SST-2 sentence features
    (hashed unigram + bigram counts and mean GloVe vectors; no network needed), full batch,
    float64. Strongly convex, so the optimum f* is unique: it is found independently by scipy's
    L-BFGS-B at tight tolerance and every curve is plotted as the gap f - f*.
(b) Char-level LSTM language model on Tiny Shakespeare with the same wall-time budget for
    each optimizer: Hessian-free Newton-CG against Adam and SGD with momentum.

    python benchmarks/optimizers.py                       # both parts, 60 s per LM optimizer
    python benchmarks/optimizers.py --part probe          # only the linear probe
    python benchmarks/optimizers.py --budget 5 --quick    # a smoke run (seconds)

Prints one table per part and writes, under --out, optimizers_probe.png and optimizers_lm.png
(loss against steps and against wall time) and optimizers.json (every curve).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmforge.config import ModelConfig  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402
from lmforge.train.newton import Newton, NewtonCG  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CORPUS = ROOT / "lmforge" / "assets" / "tinyshakespeare.txt"


# --------------------------------------------------------------------------- (a) linear probe


def read_sst2(path: Path) -> tuple[list[str], np.ndarray]:
    """Sentences and 0/1 labels of an SST-2 TSV (header `sentence<TAB>label`)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows], np.array([int(r[1]) for r in rows], dtype=np.float64)


def read_glove(path: Path) -> dict[str, np.ndarray]:
    """GloVe text format: `word v1 ... vd` per line."""
    vectors = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        word, *values = line.rstrip().split(" ")
        vectors[word] = np.array(values, dtype=np.float64)
    return vectors


def sentence_features(sentences: list[str], glove: dict[str, np.ndarray],
                      hash_dim: int) -> np.ndarray:
    """Hashed unigram + bigram log-counts (L2-normalised) beside the mean GloVe vector.

    Hashing (crc32, the "hashing trick") needs no vocabulary, so dev words unseen in
    training still land somewhere; the GloVe sample only covers frequent words.
    """
    dim = len(next(iter(glove.values()))) if glove else 0
    out = np.zeros((len(sentences), hash_dim + dim))  # (N, F)
    for i, text in enumerate(sentences):
        words = text.lower().split()
        for gram in words + [a + " " + b for a, b in zip(words, words[1:])]:
            out[i, zlib.crc32(gram.encode()) % hash_dim] += 1.0
        out[i, :hash_dim] = np.log1p(out[i, :hash_dim])
        out[i, :hash_dim] /= max(np.linalg.norm(out[i, :hash_dim]), 1e-12)
        known = [glove[w] for w in words if w in glove]
        if known:
            out[i, hash_dim:] = np.mean(known, axis=0) / 5.0  # GloVe norms are ~5
    return out


class Probe(nn.Module):
    """Logistic regression with an L2 penalty on the weights (strongly convex)."""

    def __init__(self, features: int, l2: float) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 1).double()
        nn.init.zeros_(self.linear.weight), nn.init.zeros_(self.linear.bias)
        self.l2 = l2

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.linear(x)[:, 0]  # (N,)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        return logits, loss + 0.5 * self.l2 * self.linear.weight.pow(2).sum()


def reference_optimum(x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """f* by scipy's L-BFGS-B at tight tolerance: an independent solver."""
    from scipy.optimize import minimize

    xb = np.c_[x, np.ones(len(x))]

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = xb @ w
        reg = np.r_[w[:-1], 0.0]
        value = (np.logaddexp(0, z) - y * z).mean() + 0.5 * l2 * reg @ reg
        return value, xb.T @ (0.5 * (1 + np.tanh(0.5 * z)) - y) / len(y) + l2 * reg

    result = minimize(f, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 50_000, "maxcor": 50})
    return float(result.fun)


def closure_for(model: nn.Module, opt: torch.optim.Optimizer,
                batch: Callable[[], tuple[torch.Tensor, torch.Tensor]], clip: float = 0.0):
    """The training loop's closure contract, plus the optional Newton-CG keywords."""

    def closure(backward: bool = True, return_outputs: bool = False, fraction: float = 1.0):
        x, y = batch()
        if fraction < 1.0:  # curvature on a leading sub-batch
            n = max(1, int(round(fraction * len(x))))
            x, y = x[:n], y[:n]
        logits, loss = model(x, y)
        if not backward:
            return (loss, logits) if return_outputs else loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        return loss.detach()

    return closure


def lipschitz(x: torch.Tensor, l2: float) -> float:
    """Smoothness constant of mean logistic loss + L2: λmax(XᵀX)/(4N) + l2 (power iteration)."""
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    v = torch.randn(xb.shape[1], dtype=x.dtype)
    for _ in range(100):
        v = xb.T @ (xb @ v)
        v /= v.norm()
    return float(v @ (xb.T @ (xb @ v))) / (4 * len(x)) + l2


def run_probe(args: argparse.Namespace, device: torch.device) -> dict:
    sst = DATA / "sst2"
    glove_path = DATA / "glove_sample" / "glove.6B.100d.sample.txt"
    if not (sst / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found at {sst} (expected train.tsv and dev.tsv)")
    glove = read_glove(glove_path) if glove_path.is_file() else {}
    train_s, train_y = read_sst2(sst / "train.tsv")
    dev_s, dev_y = read_sst2(sst / "dev.tsv")
    if args.quick:
        train_s, train_y = train_s[:1000], train_y[:1000]
    x_tr = sentence_features(train_s, glove, args.hash_dim)
    x_dev = sentence_features(dev_s, glove, args.hash_dim)
    f_star = reference_optimum(x_tr, train_y, args.l2)
    print(f"\n(a) linear probe: SST-2 {len(train_y)} train / {len(dev_y)} dev sentences, "
          f"{x_tr.shape[1]} features + bias, L2 {args.l2:g}; f* = {f_star:.12f} (scipy L-BFGS-B)")

    xt, yt = (torch.tensor(a, device=device) for a in (x_tr, train_y))
    xd, yd = (torch.tensor(a, device=device) for a in (x_dev, dev_y))
    lr_gd = 1.0 / lipschitz(xt.cpu(), args.l2)
    scale = 0.1 if args.quick else 1.0
    first_order = max(5, int(args.probe_steps * scale))
    runs = {  # name -> (optimizer factory, steps)
        "gd": (lambda p: torch.optim.SGD(p, lr=lr_gd), first_order),
        "sgd+momentum": (lambda p: torch.optim.SGD(p, lr=lr_gd, momentum=0.9), first_order),
        "adam": (lambda p: torch.optim.Adam(p, lr=args.probe_adam_lr), first_order),
        # max_eval: current torch (PR #161488) caps the strong-Wolfe search at max_eval - 1
        # evaluations, and max_eval defaults to max_iter * 5 // 4 = 1: no line search at all
        "lbfgs": (lambda p: torch.optim.LBFGS(p, lr=1.0, max_iter=1, max_eval=25, history_size=20,
                                              line_search_fn="strong_wolfe"),
                  max(5, int(200 * scale))),
        "newton": (lambda p: Newton(p, max_params=x_tr.shape[1] + 1), 8),
        "newton_cg": (lambda p: NewtonCG(p, max_cg_iters=50, cg_tol=1e-8), 15),
    }
    results = {}
    for name, (make, steps) in runs.items():
        torch.manual_seed(0)
        model = Probe(x_tr.shape[1], args.l2).to(device)
        opt = make(list(model.parameters()))
        closure = closure_for(model, opt, lambda: (xt, yt))
        with torch.no_grad():
            curve = {"step": [0], "time": [0.0], "loss": [float(model(xt, yt)[1])]}
        elapsed, reached = 0.0, None
        for step in range(1, steps + 1):
            start = time.perf_counter()
            opt.step(closure)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed += time.perf_counter() - start
            with torch.no_grad():
                loss = float(model(xt, yt)[1])
            curve["step"].append(step), curve["time"].append(elapsed), curve["loss"].append(loss)
            if reached is None and loss - f_star < 1e-6:
                reached = (step, elapsed)
        with torch.no_grad():
            logits, dev_loss = model(xd, yd)
            train_logits, _ = model(xt, yt)
        results[name] = dict(
            curve=curve, steps=steps, time=elapsed, train_loss=curve["loss"][-1],
            gap=curve["loss"][-1] - f_star, dev_loss=float(dev_loss),
            train_acc=float(((train_logits > 0).double() == yt).double().mean()),
            dev_acc=float(((logits > 0).double() == yd).double().mean()), to_1e6=reached)

    print(f"{'optimizer':<14}{'steps':>6}{'time s':>9}{'train loss':>13}{'f - f*':>10}"
          f"{'dev loss':>10}{'train acc':>10}{'dev acc':>9}{'to 1e-6: steps':>16}{'s':>8}")
    for name, r in results.items():
        steps_to, time_to = ("-", "-")
        if r["to_1e6"]:
            steps_to, time_to = str(r["to_1e6"][0]), f"{r['to_1e6'][1]:.3f}"
        print(f"{name:<14}{r['steps']:>6}{r['time']:>9.3f}{r['train_loss']:>13.8f}"
              f"{max(r['gap'], 0):>10.1e}{r['dev_loss']:>10.4f}{r['train_acc']:>10.3f}"
              f"{r['dev_acc']:>9.3f}{steps_to:>16}{time_to:>8}")
    return {"f_star": f_star, "lr_gd": lr_gd, "runs": results}


# --------------------------------------------------------------------------- (b) char LSTM


class CharData:
    """Tiny Shakespeare as char ids, 90/10 split, random windows from a seeded generator."""

    def __init__(self, path: Path, context: int, device: torch.device) -> None:
        text = path.read_text(encoding="utf-8")
        self.chars = sorted(set(text))
        lookup = {c: i for i, c in enumerate(self.chars)}
        ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)  # (N,)
        split = int(0.9 * len(ids))
        self.train, self.dev = ids[:split], ids[split:]
        self.context, self.device = context, device

    def batch(self, split: str, size: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        data = self.train if split == "train" else self.dev
        starts = torch.randint(0, len(data) - self.context - 1, (size,), generator=gen)
        window = torch.stack([data[s:s + self.context + 1] for s in starts])  # (B, T + 1)
        return window[:, :-1].to(self.device), window[:, 1:].to(self.device)


class CharLM(nn.Module):
    """lmforge's LSTM + causal LM head, with the benchmark's (logits, loss) forward."""

    def __init__(self, vocab: int, width: int, layers: int) -> None:
        super().__init__()
        self.lm = build_model(ModelConfig(arch="lstm", head="causal_lm", vocab_size=vocab,
                                          d_model=width, n_layers=layers, max_len=512))

    def forward(self, ids: torch.Tensor, targets: torch.Tensor):
        logits, loss = self.lm(ids, targets)
        return logits, loss


@torch.no_grad()
def lm_metrics(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple:
    model.eval()
    losses, correct, total = [], 0, 0
    for ids, targets in batches:
        logits, loss = model(ids, targets)
        losses.append(float(loss))
        correct += int((logits.argmax(-1) == targets).sum())
        total += targets.numel()
    model.train()
    return float(np.mean(losses)), correct / total


def run_lm(args: argparse.Namespace, device: torch.device) -> dict:
    data = CharData(CORPUS, args.context, device)
    gen = torch.Generator().manual_seed(1234)
    dev_batches = [data.batch("dev", 64, gen) for _ in range(args.eval_batches)]
    train_eval = [data.batch("train", 64, gen) for _ in range(args.eval_batches)]
    print(f"\n(b) char LSTM on Tiny Shakespeare: vocab {len(data.chars)}, d_model {args.width}, "
          f"{args.layers} layer(s), context {args.context}; {args.budget:g} s of training each")
    runs = {  # name -> (optimizer factory, batch size, gradient clip)
        "adam": (lambda p: torch.optim.Adam(p, lr=args.adam_lr), args.batch, 1.0),
        "sgd+momentum": (lambda p: torch.optim.SGD(p, lr=args.sgd_lr, momentum=0.9),
                         args.batch, 1.0),
        "newton_cg": (lambda p: NewtonCG(p, max_cg_iters=args.cg_iters,
                                         curvature_fraction=args.curvature_fraction),
                      args.hf_batch, 0.0),
    }
    results = {}
    for name, (make, batch_size, clip) in runs.items():
        if name not in args.lm_optimizers.split(","):
            continue
        torch.manual_seed(0)
        model = CharLM(len(data.chars), args.width, args.layers).to(device)
        opt = make(list(model.parameters()))
        gen = torch.Generator().manual_seed(0)
        current: list = []
        closure = closure_for(model, opt, lambda: current[0], clip=clip)
        dev_loss, _ = lm_metrics(model, dev_batches)
        curve = {"step": [0], "time": [0.0], "train_loss": [float("nan")], "dev_loss": [dev_loss]}
        elapsed, step, next_eval = 0.0, 0, args.budget / args.evals
        while elapsed < args.budget:
            current[:] = [data.batch("train", batch_size, gen)]
            start = time.perf_counter()
            loss = opt.step(closure)
            loss = float(loss)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed += time.perf_counter() - start
            step += 1
            if elapsed >= next_eval or elapsed >= args.budget:  # the clock stops while we evaluate
                next_eval += args.budget / args.evals
                dev_loss, _ = lm_metrics(model, dev_batches)
                for key, value in zip(curve, (step, elapsed, loss, dev_loss)):
                    curve[key].append(value)
            if not math.isfinite(loss):
                print(f"  {name}: loss is {loss} at step {step}; stopping")
                break
        train_loss, train_acc = lm_metrics(model, train_eval)
        dev_loss, dev_acc = lm_metrics(model, dev_batches)
        results[name] = dict(curve=curve, steps=step, time=elapsed, batch=batch_size,
                             tokens=step * batch_size * args.context, train_loss=train_loss,
                             train_acc=train_acc, dev_loss=dev_loss, dev_acc=dev_acc)
        extra = ""
        if isinstance(opt, NewtonCG):
            s = opt.state[next(model.parameters())]
            extra = (f" (last step: {s['cg_iters']} CG iterations, damping {s['damping']:.3g}, "
                     f"products {s.get('products', opt.options['products'])})")
        print(f"  {name}: {step} steps{extra}")

    print(f"{'optimizer':<14}{'steps':>7}{'batch':>7}{'time s':>8}{'tokens':>10}"
          f"{'train loss':>12}{'dev loss':>10}{'train acc':>10}{'dev acc':>9}")
    for name, r in results.items():
        print(f"{name:<14}{r['steps']:>7}{r['batch']:>7}{r['time']:>8.1f}{r['tokens']:>10}"
              f"{r['train_loss']:>12.4f}{r['dev_loss']:>10.4f}{r['train_acc']:>10.3f}"
              f"{r['dev_acc']:>9.3f}")
    return {"runs": results}


# --------------------------------------------------------------------------- plots and main


def plot(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "probe" in results:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        f_star = results["probe"]["f_star"]
        for name, r in results["probe"]["runs"].items():
            gap = np.maximum(np.array(r["curve"]["loss"]) - f_star, 1e-16)
            axes[0].semilogy(r["curve"]["step"], gap, label=name)
            axes[1].semilogy(r["curve"]["time"], gap, label=name)
        for ax, xlabel in zip(axes, ("step", "wall time (s)")):
            ax.set_xlabel(xlabel), ax.set_ylabel("train loss - f*"), ax.grid(alpha=0.3)
        axes[0].set_xscale("symlog", linthresh=10)
        axes[1].set_xscale("log")
        axes[0].legend()
        fig.suptitle("SST-2 linear probe (L2 logistic regression): gap to the optimum")
        fig.tight_layout()
        written.append(out / "optimizers_probe.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    if "lm" in results:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name, r in results["lm"]["runs"].items():
            c = r["curve"]
            axes[0].plot(c["step"], c["dev_loss"], label=name, marker=".")
            axes[1].plot(c["time"], c["dev_loss"], label=name, marker=".")
        for ax, xlabel in zip(axes, ("step", "wall time (s)")):
            ax.set_xlabel(xlabel), ax.set_ylabel("dev loss (nats / char)"), ax.grid(alpha=0.3)
        axes[0].set_xscale("symlog", linthresh=10)
        axes[0].legend()
        fig.suptitle("char LSTM on Tiny Shakespeare, equal wall-time budget")
        fig.tight_layout()
        written.append(out / "optimizers_lm.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["all", "probe", "lm"], default="all")
    p.add_argument("--budget", type=float, default=60.0, help="LM training seconds per optimizer")
    p.add_argument("--out", default="benchmarks/out", help="folder for the PNGs and JSON")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer probe rows and steps")
    g = p.add_argument_group("linear probe")
    g.add_argument("--hash-dim", type=int, default=1024)
    g.add_argument("--l2", type=float, default=1e-4)
    g.add_argument("--probe-steps", type=int, default=500, help="steps for gd / sgd / adam")
    g.add_argument("--probe-adam-lr", type=float, default=0.05)
    g = p.add_argument_group("char LSTM")
    g.add_argument("--width", type=int, default=128)
    g.add_argument("--layers", type=int, default=1)
    g.add_argument("--context", type=int, default=64)
    g.add_argument("--batch", type=int, default=32, help="batch of adam and sgd")
    g.add_argument("--hf-batch", type=int, default=128, help="batch of newton_cg")
    g.add_argument("--curvature-fraction", type=float, default=0.25,
                   help="newton_cg: Gauss-Newton curvature on this fraction of its batch")
    g.add_argument("--cg-iters", type=int, default=10, help="newton_cg: CG iterations per step")
    g.add_argument("--adam-lr", type=float, default=3e-3)
    g.add_argument("--sgd-lr", type=float, default=0.5)
    g.add_argument("--lm-optimizers", default="adam,sgd+momentum,newton_cg",
                   help="comma-separated subset to run")
    g.add_argument("--evals", type=int, default=10, help="dev evaluations per run")
    g.add_argument("--eval-batches", type=int, default=8)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    results = {}
    if args.part in ("all", "probe"):
        results["probe"] = run_probe(args, device)
    if args.part in ("all", "lm"):
        results["lm"] = run_lm(args, device)
    for path in plot(results, out):
        print(f"wrote {path}")
    (out / "optimizers.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'optimizers.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
