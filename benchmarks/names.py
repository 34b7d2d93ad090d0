"""Names: lmforge's architectures against makemore's figures on names.txt.

makemore (karpathy/makemore @988aa59) trains character-level models on 32,033 US baby names.
This benchmark reproduces its setup and objective exactly, with lmforge models trained by the
lmforge Trainer (`lmforge.train.loop.Trainer`, one run directory per architecture):

  - split: `torch.manual_seed(3407); torch.randperm(32033)`; the last 1,000 are the test
    names, the rest train (makemore's own code and seed, so the very same 1,000 names);
  - each name is its own sequence  <start> n a m e <end>  (lmforge's <eos> is both, as
    makemore's token 0 is), padded to the longest name + 1 = 16 positions; the loss is the
    cross-entropy over the name's tokens and the end token, padding ignored;
  - batches of 32 names drawn at random with replacement; AdamW (betas 0.9/0.99, weight
    decay 0.01); test loss evaluated every 500 steps, on all 1,000 test names, each from
    <start> with no other context: the mean NLL per target token. "best" = the lowest.

What lmforge does differently (all of it recorded in each run's config.yaml):
  - a per-architecture learning rate with 100 warm-up steps and cosine decay to lr/10
    (makemore: constant 5e-4 for every model), and dropout where it helps (`ARCHS`);
  - each batch is cut to its longest name + 1 (makemore always runs 16 positions): for these
    causal models trailing padding cannot change a real position, so the loss is identical
    and the step is cheaper;
  - the vocabulary is lmforge's char tokenizer: 26 letters and 4 special tokens (30 vs 27),
    so embeddings and output layers have 3 more rows;
  - makemore averages 20 shuffled batch means of 50 test names; this benchmark takes the mean
    over all test tokens at once (they differ by under 0.001: 1.9634 vs 1.9634-1.9641).

lmforge's usual pretraining pipeline would instead join the names into one stream with <eos>
between them and train on windows; the windows would then span name boundaries (context from
the previous name), a different objective from makemore's. The benchmark keeps makemore's.

    python benchmarks/names.py                                # every arch, 20,000 steps each
    python benchmarks/names.py --archs lstm,gru --steps 2000  # a short check
    python benchmarks/names.py --budget makemore              # each arch gets makemore's time
    python benchmarks/names.py --budget 300s --threads 1      # a wall-time cap for all

The table prints, per architecture: parameters, best test loss, training seconds, total wall
seconds (training + evaluations + checkpoints), CPU seconds of the process (with --threads 1
on a busy machine, about what the wall time would be on a quiet one), and the makemore
figure for its type; "beats" says yes when the loss is at most makemore's (to its printed
3 decimals) in no more wall time, "loss" when only the loss is.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmforge.compare import parse_budget  # noqa: E402
from lmforge.config import (Config, ConfigError, apply_overrides, config_from_dict,  # noqa: E402
                            save_config)
from lmforge.models.build import build_model, count_parameters  # noqa: E402
from lmforge.models.heads import IGNORE_INDEX  # noqa: E402
from lmforge.tokenizers import Tokenizer, train_tokenizer  # noqa: E402
from lmforge.train.loop import Trainer, pick_device  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "names" / "names.txt"
SPLIT_SEED = 3407  # makemore's default --seed; its randperm decides the test names
TEST_NAMES = 1000

# makemore after 20,000 steps on this machine (2 CPU cores): best test loss, params, seconds
MAKEMORE = {
    "bigram": (2.450, 729, 80),
    "bow": (2.153, None, 93),
    "rnn": (2.054, 12_000, 138),
    "mlp": (2.031, 69_000, 153),
    "gru": (1.999, 28_000, 226),
    "transformer": (1.966, 205_000, 445),
}
# the makemore model each lmforge architecture is held against (loss and time)
REFERENCE = {"bigram": "bigram", "mlp": "mlp", "rnn": "rnn", "lstm": "gru", "gru": "gru",
             "rcnn": "gru", "cnn": "transformer", "gpt": "transformer",
             "lstm-wide": "transformer"}

# Per-architecture recipes at makemore's sizes (vocab 30). `model` are ModelConfig fields,
# `train` TrainConfig fields; everything else is the makemore setup above.
ARCHS: dict[str, dict[str, dict[str, Any]]] = {
    # the full 30 x 30 table (+ bias). A table tolerates a high rate; decaying to ~0 removes
    # the batch noise (2.4520 with min_lr 2e-3, 2.4503 with 1e-5); light weight decay smooths
    # like add-k counts (the best smoothed count table scores 2.4496 on this split)
    "bigram": {"model": {"d_model": 30},
               "train": {"lr": 3e-2, "min_lr": 1e-5, "weight_decay": 1e-3}},
    # makemore's MLP: 16-character window, 64-wide embeddings, one tanh layer of 64 (68K)
    "mlp": {"model": {"extra": {"context": 16}, "d_embed": 64, "d_model": 64, "n_layers": 1,
                      "activation": "tanh"}, "train": {"lr": 2e-3}},
    # Elman RNN, tanh, 70 wide: 12K like makemore's
    "rnn": {"model": {"d_model": 70, "n_layers": 1, "activation": "tanh"}, "train": {"lr": 3e-3}},
    # GRU 65 wide: 28K like makemore's; the LSTM at the same 28K (57 wide)
    "gru": {"model": {"d_model": 65, "n_layers": 1}, "train": {"lr": 3e-3}},
    "lstm": {"model": {"d_model": 57, "n_layers": 1}, "train": {"lr": 3e-3}},
    # Lai et al. 2015, causal: LSTM left context + tanh projection, 28K
    "rcnn": {"model": {"d_model": 51, "n_layers": 1, "cell": "lstm", "activation": "tanh"},
             "train": {"lr": 3e-3}},
    # WaveNet-style: dilations 1, 2, 4, 8 (receptive field 31 > 16), 64 wide (185K)
    "cnn": {"model": {"d_model": 64, "n_layers": 4, "kernel_size": 3, "d_ff": 256,
                      "activation": "gelu", "dropout": 0.1}, "train": {"lr": 2e-3}},
    # makemore's transformer: 4 layers, 4 heads, 64 wide, context 16 (203K)
    "gpt": {"model": {"d_model": 64, "n_layers": 4, "n_heads": 4, "activation": "gelu",
                      "dropout": 0.1}, "train": {"lr": 2e-3}},
    # a wider LSTM (136K), held against makemore's transformer and the 1.92 mark
    "lstm-wide": {"model": {"arch": "lstm", "d_model": 128, "n_layers": 1, "dropout": 0.1},
                  "train": {"lr": 3e-3}},
}

DEFAULT_ARCHS = [a for a in ARCHS if a != "lstm-wide"]  # one per family


# --------------------------------------------------------------------------- data


def load_names(path: Path) -> list[str]:
    """makemore's reading: one name per line, stripped, blanks dropped."""
    if not path.is_file():
        raise ConfigError(f"--data {str(path)!r} does not exist (names.txt, one name per line)")
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
    return [w for w in words if w]


def makemore_split(words: list[str], seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """(train, test) exactly as makemore's create_datasets: the last 1,000 of a randperm."""
    n_test = min(TEST_NAMES, int(len(words) * 0.1))
    perm = torch.randperm(len(words), generator=torch.Generator().manual_seed(seed)).tolist()
    return [words[i] for i in perm[:-n_test]], [words[i] for i in perm[-n_test:]]


def encode_names(words: list[str], tok: Tokenizer, length: int) -> tuple[torch.Tensor, ...]:
    """x = <eos> n a m e <pad>..., y = n a m e <eos> -100...; both (N, length); lengths (N,)."""
    start = tok.eos_id
    pad = tok.pad_id if tok.pad_id is not None else start
    x = torch.full((len(words), length), pad, dtype=torch.long)
    y = torch.full((len(words), length), IGNORE_INDEX, dtype=torch.long)
    lengths = torch.zeros(len(words), dtype=torch.long)
    for i, ids in enumerate(tok.encode_batch(words)):
        n = len(ids)
        x[i, 0] = start
        x[i, 1:n + 1] = torch.tensor(ids)
        y[i, :n] = torch.tensor(ids)
        y[i, n] = start  # the end token
        lengths[i] = n + 1  # target positions: the letters and the end
    return x, y, lengths


class NamesTask:
    """makemore's objective under the lmforge task protocol (see lmforge/train/loop.py)."""

    metric_names = ["train_loss"]
    monitor = ("loss", "min")
    keep_best = True

    def __init__(self, model: nn.Module, train: tuple[torch.Tensor, ...],
                 test: tuple[torch.Tensor, ...], batch_size: int, seed: int,
                 device: torch.device) -> None:
        self.model, self.batch_size, self.device = model, batch_size, device
        self.train, self.test = train, test
        self.gen = torch.Generator().manual_seed(seed)
        # a fixed 1,000 training names, to watch the train/test gap
        self.train_probe = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(0))[:TEST_NAMES]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, lengths = self.train
        idx = torch.randint(len(x), (self.batch_size,), generator=self.gen)  # with replacement
        T = int(lengths[idx].max())  # trailing padding cannot reach a real position: cut it
        return x[idx, :T].to(self.device), y[idx, :T].to(self.device)  # (B, T) each

    def batch_tokens(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return batch[0].numel()

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        x, y = batch
        return (model or self.model)(x, y)[1]  # mean over the name tokens (padding ignored)

    def _mean_nll(self, x: torch.Tensor, y: torch.Tensor) -> float:
        total, count = 0.0, 0
        for i in range(0, len(x), 500):
            xb, yb = x[i:i + 500].to(self.device), y[i:i + 500].to(self.device)
            n = int((yb != IGNORE_INDEX).sum())
            total += self.model(xb, yb)[1].item() * n
            count += n
        return total / count

    def evaluate(self) -> dict[str, float]:
        """Test loss: every test name from <start>, mean NLL per target token."""
        x, y, _ = self.test
        probe = self.train_probe
        return {"loss": self._mean_nll(x, y),
                "train_loss": self._mean_nll(self.train[0][probe], self.train[1][probe])}

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])


# --------------------------------------------------------------------------- one run


def arch_config(arch: str, overrides: list[str], steps: int, args: argparse.Namespace,
                vocab_size: int, length: int) -> Config:
    """The Config of one benchmark run: the arch's recipe on top of makemore's setup."""
    recipe = copy.deepcopy(ARCHS[arch])
    tree = {  # a recipe may name its arch (variants such as "lstm-wide"); else the key is it
        "model": {"arch": arch, "vocab_size": vocab_size, "max_len": length, **recipe["model"]},
        "data": {"path": str(args.data)},
        "tokenizer": {"kind": "char"},
        "train": {"max_steps": steps, "batch_size": args.batch_size, "optimizer": "adamw",
                  "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.99, "warmup_steps": 100,
                  "schedule": "cosine", "grad_clip": 1.0, "eval_every": args.eval_every,
                  "log_every": 100, "sample_tokens": 0,
                  "device": args.device, "threads": args.threads, "seed": args.seed,
                  "progress": False, **recipe["train"]},
        "out": str(Path(args.out) / arch),
        "task": {"benchmark": "names", "split_seed": SPLIT_SEED, "test_names": TEST_NAMES},
    }
    # min_lr: the recipe's, else lr / 10 (recomputed when an override changes lr)
    fixed_min = "min_lr" in recipe["train"] or any(o.startswith("train.min_lr=") for o in overrides)
    apply_overrides(tree, overrides)
    if not fixed_min:
        tree["train"]["min_lr"] = float(tree["train"]["lr"]) / 10
    return config_from_dict(tree, source=f"names {arch}")


def run_arch(arch: str, cfg: Config, tok: Tokenizer, data: dict[str, tuple],
             budget_s: float) -> dict[str, Any]:
    """Train one architecture; returns its row of the table."""
    from lmforge.compare import measure_step_seconds
    from lmforge.train.checkpoint import atomic_write_text

    device = pick_device(cfg.train.device)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if budget_s > 0:
        # the schedule needs a step count: estimate it from a probe, then cap the time
        probe = copy.deepcopy(cfg)
        probe.model.max_len = 12  # about the mean cut batch length (names average 6.1 + 1)
        step_s = measure_step_seconds(probe, device)
        cfg.train.max_steps = max(1, int(budget_s / step_s))
        cfg.train.time_budget_s = budget_s
    run_dir = Path(cfg.out)
    if (run_dir / "trainer_state.pt").exists():
        raise ConfigError(f"{run_dir} already holds a run; choose another --out or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_text(run_dir / "model_config.json", cfg.model.to_json())
    tok.save(run_dir / "tokenizer.json")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).to(device)
    task = NamesTask(model, data["train"], data["test"], cfg.train.batch_size, cfg.train.seed,
                     device)
    trainer = Trainer(task, cfg.train, run_dir, log=lambda msg: None)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"arch": arch, "params": count_parameters(model), "steps": trainer.step,
            "best_test_loss": trainer.best, "train_s": trainer.elapsed, "wall_s": wall,
            "cpu_s": cpu, "lr": cfg.train.lr, "dropout": cfg.model.dropout}


# --------------------------------------------------------------------------- report


def verdict(row: dict[str, Any]) -> str:
    """'yes' when the loss is at most makemore's for the type, in no more wall time."""
    ref = MAKEMORE[REFERENCE[row["arch"]]]
    loss_ok = row["best_test_loss"] <= ref[0] + 5e-4  # makemore prints 3 decimals
    time_ok = row["wall_s"] <= ref[2]
    return "yes" if loss_ok and time_ok else ("loss" if loss_ok else "no")


def format_table(rows: list[dict[str, Any]]) -> str:
    """lmforge's rows with the makemore figure each is held against."""
    head = (f"{'arch':<10}{'params':>9}{'steps':>8}{'lr':>8}{'drop':>6}{'best test':>11}"
            f"{'train s':>9}{'wall s':>8}{'cpu s':>7}   {'makemore (type: loss, params, s)':<36}"
            f"{'beats':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ref_name = REFERENCE[r["arch"]]
        loss, n, secs = MAKEMORE[ref_name]
        ref = f"{ref_name}: {loss:.3f}, {_k(n)}, {secs} s"
        lines.append(f"{r['arch']:<10}{r['params']:>9,}{r['steps']:>8,}{r['lr']:>8.0e}"
                     f"{r['dropout']:>6.2f}{r['best_test_loss']:>11.4f}{r['train_s']:>9.0f}"
                     f"{r['wall_s']:>8.0f}{r['cpu_s']:>7.0f}   {ref:<36}{verdict(r):>6}")
    lines.append("makemore (20,000 steps, batch 32, lr 5e-4): " + ", ".join(
        f"{k} {v[0]:.3f} ({v[2]} s)" for k, v in MAKEMORE.items()))
    return "\n".join(lines)


def _k(n: int | None) -> str:
    return "-" if n is None else f"{n / 1000:.0f}K" if n >= 1000 else str(n)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train each architecture in turn, print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(DEFAULT_ARCHS),
                        help=f"comma-separated from {','.join(ARCHS)} (default: all but "
                             f"lstm-wide)")
    parser.add_argument("--steps", type=int, default=20_000, help="optimizer steps (20,000)")
    parser.add_argument("--budget", default="",
                        help="wall-time cap per arch (300s, 5m), or 'makemore': each arch gets "
                             "makemore's time for its type; steps then come from a probe")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", default="runs/names-bench", help="one run directory per arch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1337, help="init and batch order")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("overrides", nargs="*", metavar="[ARCH:]key=value",
                        help="e.g. gpt:model.dropout=0.2 or train.lr=1e-3 (every arch)")
    args = parser.parse_args(argv)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    for a in archs:
        if a not in ARCHS:
            parser.error(f"--archs: {a!r} is not one of {', '.join(ARCHS)}")
    budget = {}
    if args.budget == "makemore":
        budget = {a: float(MAKEMORE[REFERENCE[a]][2]) for a in archs}
    elif args.budget:
        seconds = parse_budget(args.budget)
        if seconds.kind != "time":
            parser.error("--budget takes a wall time here (300s, 5m) or 'makemore'")
        budget = {a: seconds.value for a in archs}

    words = load_names(args.data)
    train_words, test_words = makemore_split(words)
    tok = train_tokenizer("char", words)
    length = max(len(w) for w in words) + 1  # <start> + the longest name, as makemore
    data = {"train": encode_names(train_words, tok, length),
            "test": encode_names(test_words, tok, length)}
    print(f"names: {len(train_words):,} train / {len(test_words):,} test names, vocab "
          f"{tok.vocab_size}, length {length}, threads {args.threads or torch.get_num_threads()}",
          flush=True)
    rows = []
    for arch in archs:
        mine = [o.split(":", 1)[1] for o in args.overrides if o.startswith(f"{arch}:")]
        common = [o for o in args.overrides if ":" not in o.split("=", 1)[0]]
        cfg = arch_config(arch, common + mine, args.steps, args, tok.vocab_size, length)
        row = run_arch(arch, cfg, tok, data, budget.get(arch, 0.0))
        rows.append(row)
        print(f"{arch}: {row['params']:,} params, best test {row['best_test_loss']:.4f} after "
              f"{row['steps']:,} steps, {row['train_s']:.0f} s training, {row['wall_s']:.0f} s "
              f"wall", flush=True)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
