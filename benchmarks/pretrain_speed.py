"""Pretraining speed: lmforge against a plain PyTorch loop of the same shape, in the same run.

The shape is nanoGPT's CPU recipe (shakespeare_char: 4 layers, 4 heads, d_model 128, context
64, batch 12, char-level Tiny Shakespeare). Prints ms/step, tokens/s and model-FLOPs
utilisation against the fp32 (and bf16) matmul peak measured here, plus the ratios.

    python benchmarks/pretrain_speed.py                 # fp32 + bf16, 3 alternating rounds of 300 steps
    python benchmarks/pretrain_speed.py --steps 2000 --quality   # also val loss after 2000 steps
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmforge.config import load_config  # noqa: E402


# ----------------------------------------------------------------- the plain PyTorch reference


class RefBlock(nn.Module):
    """nanoGPT's block, written out: pre-LN attention + MLP, no biases."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.h, D // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class RefGPT(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(RefBlock(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos(torch.arange(x.size(1)))
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.ln(h))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))


def reference_step_times(data: torch.Tensor, vocab: int, args, steps: int) -> list[float]:
    """Plain loop: random windows, AdamW, clip, cosine lr — the work nanoGPT's train.py does."""
    torch.manual_seed(0)
    model = RefGPT(vocab, 128, 4, 4, 64)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        ix = torch.randint(len(data) - 65, (12,))
        x = torch.stack([data[i:i + 64] for i in ix])
        y = torch.stack([data[i + 1:i + 65] for i in ix])
        for g in opt.param_groups:
            g["lr"] = 1e-4 + 0.5 * (1 + math.cos(math.pi * step / steps)) * 9e-4
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t0)
    return times


# ----------------------------------------------------------------- lmforge


def lmforge_run(precision: str, steps: int, quality: bool, compile_: bool, tmp: Path):
    """Train the default recipe through lmforge's own loop; returns (step times, val loss, wall)."""
    from lmforge.pretrain import pretrain

    # nanoGPT's learning rate, like the reference loop (lmforge's own default is 3e-3)
    overrides = [f"train.max_steps={steps}", f"train.precision={precision}",
                 "train.lr=1e-3", "train.min_lr=1e-4",
                 f"train.compile={str(compile_).lower()}", "train.progress=false",
                 f"train.threads={torch.get_num_threads()}",
                 f"out={tmp / f'{precision}-{compile_}'}", "train.log_every=1",
                 f"train.eval_every={steps if quality else 0}", "train.sample_tokens=0",
                 f"data.cache_dir={tmp / 'cache'}"]
    if quality:
        overrides.append("train.eval_batches=200")
    cfg = load_config(Path(__file__).parent.parent / "configs" / "shakespeare-char-gpt.yaml", overrides)
    t0 = time.perf_counter()
    run = pretrain(cfg, log=lambda *a: None)
    wall = time.perf_counter() - t0
    import csv

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    elapsed = [float(r["elapsed_s"]) for r in rows if r["split"] == "train"]
    times = [b - a for a, b in zip([0.0] + elapsed[:-1], elapsed)]
    val = [float(r["loss"]) for r in rows if r["split"] == "val"]
    return times, (val[-1] if val else float("nan")), wall


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    """Dense matmul FLOP/s on this machine (the roofline for MFU)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def flops_per_step(n_params: int, layers: int, d: int, ctx: int, batch: int) -> float:
    """6N per token for the matmuls plus attention's 12 * L * T * D (PaLM appendix B)."""
    return (6 * n_params + 12 * layers * ctx * d) * ctx * batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=20, help="untimed first steps")
    parser.add_argument("--quality", action="store_true", help="report val loss (use --steps 2000)")
    parser.add_argument("--compile", action="store_true", help="also time train.compile=true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of every configuration (1 with --quality)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quality:
        args.rounds = 1  # one full-length run per configuration

    text = (Path(__file__).parent.parent / "lmforge" / "assets" / "tinyshakespeare.txt").read_text()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text[:200_000]], dtype=torch.long)
    n_params = sum(p.numel() for p in RefGPT(len(chars), 128, 4, 4, 64).parameters()) \
        - 64 * 128  # nanoGPT excludes position embeddings from N
    flops = flops_per_step(n_params, 4, 128, 64, 12)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)

    # Rounds alternate plain PyTorch and each lmforge configuration, and every figure is the
    # median over all rounds' steps, so a machine that speeds up or slows down during the run
    # (shared hosts do) favours no side.
    configs = [("fp32", False)]
    if not args.no_bf16:
        configs.append(("bf16", False))
    if args.compile:  # compile time falls in the untimed warm-up steps
        configs.append(("fp32", True))
        if not args.no_bf16:
            configs.append(("bf16", True))
    ref: list[float] = []
    timed: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    vals: dict[tuple[str, bool], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            ref += reference_step_times(data, len(chars), args, args.steps + args.warmup)[args.warmup:]
            for precision, compile_ in configs:
                times, val, _ = lmforge_run(precision, args.steps + args.warmup, args.quality,
                                            compile_, Path(tmp) / f"round{r}")
                timed[(precision, compile_)] += times[args.warmup:]
                vals[(precision, compile_)] = val
    results = [("plain PyTorch (fp32)", ref, float("nan"), peak32)]
    for (precision, compile_), times in timed.items():
        name = f"lmforge {precision}" + (" + compile" if compile_ else "")
        results.append((name, times, vals[(precision, compile_)],
                        peak16 if precision == "bf16" else peak32))

    ref_ms = statistics.median(ref) * 1e3
    print(f"\nfp32 matmul peak {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s; "
          f"{flops / 1e9:.2f} GFLOP per step; {torch.get_num_threads()} threads\n")
    print(f"{'configuration':<26}{'ms/step':>9}{'tokens/s':>10}{'MFU':>7}{'vs plain':>10}"
          + ("   val loss" if args.quality else ""))
    for name, times, val, peak in results:
        ms = statistics.median(times) * 1e3
        line = (f"{name:<26}{ms:>9.1f}{12 * 64 / (ms / 1e3):>10,.0f}"
                f"{flops / (ms / 1e3) / peak32:>7.1%}{ref_ms / ms:>9.2f}x")
        if args.quality:
            line += f"   {val:.3f}"
        print(line)
    print("\nMFU is against the fp32 peak for every row (bf16 rows can exceed what fp32 allows).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
