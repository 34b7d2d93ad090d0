"""Sentiment benchmark on SST-2: the two Keras recipes and sentiment-best, plus speed and
padding checks against the same model written in plain PyTorch, measured in the same run.

    python benchmarks/sentiment.py                       # full recipes (10 epochs each)
    python benchmarks/sentiment.py --epochs 1 --speed-epochs 1 --padding-epochs 1   # quick look
    python benchmarks/sentiment.py --recipes "" --speed-epochs 0 --padding-epochs 0 --ensemble 5

Prints, for each recipe: dev and test accuracy, macro-F1, training samples/s and wall time.
Then:
  speed    plain PyTorch (nn.Embedding -> nn.RNN / nn.LSTM -> nn.Linear, RMSprop, BCE) and
           lmforge (Classifier through the Trainer) over the SAME batches, alternating rounds,
           median samples/s; lmforge also with packed sequences (`extra.always_mask`).
  padding  the plain Keras-style model (reads the last time step of sequences padded to 50)
           trained with front and with end padding, and a trained lmforge model scored with
           front and end padding: Keras-style models need front padding, lmforge does not care.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import load_config
from lmforge.data.labelled import LabelledBatches, LabelMap, encode_texts, read_labelled, resolve_splits
from lmforge.models.build import build_model
from lmforge.tasks.classify import ClassificationTask, TextClassifier, finetune, keras_init, parse_options
from lmforge.tokenizers import train_tokenizer
from lmforge.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sst2"
RECIPES = {"simplernn": "sentiment-simplernn.yaml", "lstm": "sentiment-lstm.yaml",
           "best": "sentiment-best.yaml"}


# --------------------------------------------------------------------------- recipes


def run_recipe(name: str, data: Path, out: Path, epochs: int | None, threads: int) -> dict:
    """Train one recipe with `lmforge finetune classify`; its summary.json plus wall time."""
    options = {"epochs": epochs} if epochs else {}
    t0 = time.perf_counter()
    run = finetune(data, config=ROOT / "configs" / RECIPES[name], out=out / name,
                   overrides=["train.progress=false", f"train.threads={threads}"],
                   log=lambda *a: None, **options)
    summary = json.loads((run / "summary.json").read_text())
    summary["wall_total_s"] = time.perf_counter() - t0
    return summary


def ensemble(data: Path, out: Path, k: int, threads: int) -> dict[str, float]:
    """k seeds of the best recipe, their class probabilities averaged: dev and test accuracy."""
    splits = {name: read_labelled(path) for name, path in resolve_splits(data).items()
              if name in ("dev", "test")}
    probs: dict[str, list[np.ndarray]] = {name: [] for name in splits}
    gold: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for seed in range(1, k + 1):
        run = finetune(data, config=ROOT / "configs" / RECIPES["best"], out=out / f"best-seed{seed}",
                       overrides=["train.progress=false", f"train.threads={threads}",
                                  f"train.seed={seed}"], log=lambda *a: None)
        clf = TextClassifier.load(run, device="cpu")
        for name, split in splits.items():  # every seed's run maps the labels alike (sorted)
            probs[name].append(clf.predict_proba(split.texts))  # (N, K), columns = class ids
            gold[name] = clf.labels.encode(split.labels, split.path)
    result = {f"{name}_acc": float((np.mean(probs[name], 0).argmax(1) == gold[name]).mean())
              for name in probs}
    result.update({f"{name}_acc_members": [float((q.argmax(1) == gold[name]).mean())
                                            for q in probs[name]] for name in probs})
    result["wall_s"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- plain PyTorch twin


class PlainKeras(nn.Module):
    """Embedding -> RNN/LSTM -> Linear(1): the Keras model in plain PyTorch."""

    def __init__(self, kind: str, vocab: int, embed: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = (nn.LSTM if kind == "lstm" else nn.RNN)(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h, _ = self.rnn(self.embed(ids))  # (B, T, H)
        if lengths is None:  # Keras: the output after the last time step, padding or not
            return self.out(h[:, -1])[:, 0]
        return self.out(h[torch.arange(len(ids)), lengths - 1])[:, 0]  # last real token


def sst2_arrays(data: Path, vocab_size: int = 10000, max_len: int = 50):
    """Word tokenizer (top words) and encoded train / dev splits, as the Keras recipes use."""
    files = resolve_splits(data)
    train, dev = read_labelled(files["train"]), read_labelled(files["dev"])
    tok = train_tokenizer("word", train.texts, vocab_size=vocab_size, lowercase=True)
    labels = LabelMap.fit(train.labels)
    enc = lambda s: (encode_texts(tok, s.texts, max_len, "start")[0],  # noqa: E731
                     labels.encode(s.labels, s.path))
    return tok, enc(train), enc(dev)


def plain_epoch(model: nn.Module, opt: torch.optim.Optimizer, batches: LabelledBatches, epoch: int) -> float:
    """One epoch of the plain loop over `batches.plan(epoch)`; returns seconds."""
    model.train()
    t0 = time.perf_counter()
    for rows in batches.plan(epoch):
        ids, mask, y = batches.collate(rows)
        logit = model(ids, mask.sum(1))
        loss = F.binary_cross_entropy_with_logits(logit, y.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def lmforge_epoch(name: str, train: tuple, dev: tuple, vocab: int, run_dir: Path,
                  always_mask: bool = False) -> float:
    """One epoch of the lmforge recipe through the Trainer; returns training seconds."""
    cfg = load_config(ROOT / "configs" / RECIPES[name], ["train.progress=false", "train.eval_every=0"])
    m = dataclasses.replace(cfg.model, vocab_size=vocab, head="classifier",
                            extra={"binary_head": True, "always_mask": always_mask})
    model = build_model(m)
    keras_init(model)
    opts = parse_options(cfg.task)
    batches = LabelledBatches(*train, cfg.train.batch_size, 0, bucket=opts.bucket, seed=0)
    task = ClassificationTask(model, batches, LabelledBatches(*dev, 256, 0, shuffle=False), ["0", "1"])
    cfg.train.max_steps = len(batches)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(task, cfg.train, run_dir, log=lambda *a: None)
    trainer.fit()
    return trainer.elapsed


def speed(name: str, train: tuple, dev: tuple, vocab: int, rounds: int, work: Path) -> dict:
    """Median samples/s of plain PyTorch vs lmforge (and lmforge with packing), alternating."""
    cfg = load_config(ROOT / "configs" / RECIPES[name])
    opts = parse_options(cfg.task)
    kind = "lstm" if cfg.model.arch == "lstm" else "rnn"
    n = len(train[0])
    times: dict[str, list[float]] = {"plain": [], "lmforge": [], "lmforge_packed": []}
    for r in range(rounds):
        plain = PlainKeras(kind, vocab)
        keras_init(plain)
        opt = torch.optim.RMSprop(plain.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
        batches = LabelledBatches(*train, cfg.train.batch_size, 0, bucket=opts.bucket, seed=0)
        times["plain"].append(plain_epoch(plain, opt, batches, 0))
        times["lmforge"].append(lmforge_epoch(name, train, dev, vocab, work / f"{name}-{r}"))
        times["lmforge_packed"].append(
            lmforge_epoch(name, train, dev, vocab, work / f"{name}-{r}-packed", always_mask=True))
    return {k: n / statistics.median(v) for k, v in times.items()}


def pad_fixed(ids: list[np.ndarray], side: str, width: int = 50) -> torch.Tensor:
    """Pad (or cut) every row to `width` with 0 on the given side, as Keras's pad_sequences."""
    out = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        row = row[-width:]
        if side == "front":
            out[i, width - len(row):] = row
        else:
            out[i, : len(row)] = row
    return torch.from_numpy(out)


def keras_padding(kind: str, train: tuple, dev: tuple, vocab: int, epochs: int, side: str) -> float:
    """Dev accuracy of the plain Keras-style model trained on sequences padded to 50 on `side`."""
    torch.manual_seed(0)
    model = PlainKeras(kind, vocab)
    keras_init(model)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    x, y = pad_fixed(train[0], side), torch.from_numpy(train[1]).float()
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=gen).split(32):
            loss = F.binary_cross_entropy_with_logits(model(x[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = (model(pad_fixed(dev[0], side)) > 0).long().numpy()
    return float((pred == dev[1]).mean())


def lmforge_padding(run: Path, dev_file: Path) -> dict[str, float]:
    """Dev accuracy of a trained lmforge run with batches padded to 50 on either side."""
    clf = TextClassifier.load(run, device="cpu")
    split = read_labelled(dev_file)
    gold = clf.labels.encode(split.labels, dev_file)
    ids, _ = encode_texts(clf.tokenizer, split.texts, clf.max_len, clf.options.truncate)
    out = {}
    for side in ("right", "left"):
        batches = LabelledBatches(ids, gold, 64, clf.tokenizer.pad_id or 0, shuffle=False,
                                  padding=side, pad_to=50)
        from lmforge.tasks.classify import predict_batches

        probs, _ = predict_batches(clf.model, batches)
        out["end" if side == "right" else "front"] = float((probs.argmax(1) == gold).mean())
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--recipes", default="simplernn,lstm,best", help="comma-separated; '' = none")
    p.add_argument("--epochs", type=int, default=0, help="override every recipe's epochs (0 = recipe's)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--speed-epochs", type=int, default=3, help="alternating rounds for the speed table (0 = skip)")
    p.add_argument("--padding-epochs", type=int, default=3, help="epochs of the padding check (0 = skip)")
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    p.add_argument("--ensemble", type=int, default=0,
                   help="also train this many seeds of the best recipe and average them (0 = skip)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.out or Path(tempfile.mkdtemp(prefix="lmforge-sentiment-"))
    print(f"SST-2 from {args.data} | torch {torch.__version__} | {torch.get_num_threads()} threads | runs in {work}")

    results = {}
    print(f"\n{'recipe':<10} {'epochs':>6} {'dev acc':>8} {'dev F1':>8} {'test acc':>8} {'test F1':>8} "
          f"{'samples/s':>10} {'train s':>8} {'wall s':>8}")
    for name in filter(None, args.recipes.split(",")):
        s = run_recipe(name, args.data, work, args.epochs or None, args.threads)
        results[name] = s
        print(f"{name:<10} {s['epochs']:>6.1f} {s['dev']['accuracy']:>8.4f} {s['dev']['macro_f1']:>8.4f} "
              f"{s['test']['accuracy']:>8.4f} {s['test']['macro_f1']:>8.4f} {s['samples_per_s']:>10.0f} "
              f"{s['train_seconds']:>8.1f} {s['wall_total_s']:>8.1f}", flush=True)

    if args.ensemble:
        e = ensemble(args.data, work / "ensemble", args.ensemble, args.threads)
        members = ", ".join(f"{a:.4f}" for a in e["test_acc_members"])
        print(f"\nensemble of {args.ensemble} best-recipe seeds (probabilities averaged): dev acc "
              f"{e['dev_acc']:.4f}, test acc {e['test_acc']:.4f} (members' test acc {members}), "
              f"{e['wall_s']:.0f} s in all", flush=True)

    if args.speed_epochs or args.padding_epochs:
        tok, train, dev = sst2_arrays(args.data)
    if args.speed_epochs:
        print(f"\ntraining speed, samples/s (median of {args.speed_epochs} alternating one-epoch rounds, same batches)")
        print(f"{'model':<10} {'plain torch':>12} {'lmforge':>10} {'lmforge packed':>15} {'ratio':>7}")
        for name in ("simplernn", "lstm"):
            sp = speed(name, train, dev, tok.vocab_size, args.speed_epochs, work / "speed")
            print(f"{name:<10} {sp['plain']:>12.0f} {sp['lmforge']:>10.0f} {sp['lmforge_packed']:>15.0f} "
                  f"{sp['lmforge'] / sp['plain']:>7.2f}", flush=True)
    if args.padding_epochs:
        print(f"\npadding side, dev accuracy ({args.padding_epochs} epochs, sequences padded to 50)")
        print(f"{'model':<28} {'front pad':>10} {'end pad':>10}")
        for kind in ("rnn", "lstm"):
            front = keras_padding(kind, train, dev, tok.vocab_size, args.padding_epochs, "front")
            end = keras_padding(kind, train, dev, tok.vocab_size, args.padding_epochs, "end")
            print(f"{'plain ' + kind + ', reads h[:, -1]':<28} {front:>10.4f} {end:>10.4f}", flush=True)
        for name in ("simplernn", "lstm"):
            if (work / name / "summary.json").is_file():  # trained now, or kept in --out
                acc = lmforge_padding(work / name, resolve_splits(args.data)["dev"])
                print(f"{'lmforge ' + name + ' (mask)':<28} {acc['front']:>10.4f} {acc['end']:>10.4f}")


if __name__ == "__main__":
    main()
