"""GloVe benchmark: training speed on Tiny Shakespeare, a word-similarity sanity check, and
loading / aligning the real glove.6B sample.

    python benchmarks/glove.py                         # 25 epochs, dim 100, window 10, min-count 5
    python benchmarks/glove.py --epochs 5 --threads 2  # quick look
    python benchmarks/glove.py --sst2                  # + SST-2 LSTM with and without GloVe vectors

Prints corpus tokens/s for the co-occurrence build (vocabulary pass included) and for the
training epochs separately, the nearest neighbours of a few frequent words, and two analogies.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lmforge.convert.glove import WordVectors, align_embeddings, train_glove

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "lmforge" / "assets" / "tinyshakespeare.txt"
SHARED = ROOT.parent / "shared" / "data"
PROBES = ["king", "lord", "love", "father", "night", "thou", "death", "sweet"]
ANALOGIES = [("he", "his", "she"), ("father", "son", "mother")]


def speed_and_similarity(args: argparse.Namespace) -> WordVectors:
    """Train on Tiny Shakespeare; print timings, neighbours and analogies."""
    t0 = time.perf_counter()
    vecs = train_glove(CORPUS, dim=args.dim, window=args.window, min_count=args.min_count, epochs=args.epochs,
                       batch_size=args.batch_size, x_max=args.x_max, lr=args.lr, seed=0, device=args.device,
                       log_fn=(lambda line: print("  " + line)) if args.verbose else (lambda line: None))
    total = time.perf_counter() - t0
    info = vecs.info
    build_s = info["vocab_s"] + info["cooccur_s"]
    epoch_med = statistics.median(info["epoch_s"]) if info["epoch_s"] else float("nan")
    print(f"corpus      {CORPUS.name}: {info['tokens']:,} tokens, vocabulary {info['vocab_size']:,} "
          f"(min_count {args.min_count}), {info['nnz']:,} nonzero co-occurrences (window {args.window})")
    print(f"co-occur    {build_s:.2f} s = {info['tokens'] / build_s:,.0f} tokens/s "
          f"(vocabulary pass {info['vocab_s']:.2f} s + counting {info['cooccur_s']:.2f} s)")
    print(f"epochs      {args.epochs} x dim {args.dim} on {info['device']} ({torch.get_num_threads()} threads): "
          f"median {epoch_med:.2f} s/epoch = {info['tokens'] / epoch_med:,.0f} corpus tokens/s, "
          f"{info['nnz'] / epoch_med:,.0f} pairs/s")
    print(f"loss        {info['losses'][0]:.4f} (epoch 1) -> {info['losses'][-1]:.4f} (epoch {args.epochs})")
    print(f"wall        {total:.1f} s total")
    print("\nnearest neighbours (cosine):")
    for word in PROBES:
        if word in vecs:
            print(f"  {word:<7} " + ", ".join(f"{w} {s:.2f}" for w, s in vecs.nearest(word, k=6)))
    print("\nanalogies (b - a + c):")
    for a, b, c in ANALOGIES:
        if all(w in vecs for w in (a, b, c)):
            print(f"  {a} : {b} :: {c} : " + ", ".join(w for w, _ in vecs.analogy(a, b, c, k=3)))
    return vecs


def glove_sample(vecs: WordVectors) -> None:
    """Load the real glove.6B.100d sample and align it to the Shakespeare vocabulary (dims differ)."""
    path = SHARED / "glove_sample" / "glove.6B.100d.sample.txt"
    if not path.is_file():
        print(f"\nglove sample: {path} not found, skipped")
        return
    t0 = time.perf_counter()
    sample = WordVectors.load(path)
    load_s = time.perf_counter() - t0
    print(f"\nglove sample {path.name}: {len(sample)} x {sample.dim} loaded in {load_s * 1000:.1f} ms; "
          f"nearest to 'he': " + ", ".join(w for w, _ in sample.nearest("he", k=4)))
    matrix, report = align_embeddings(sample, vecs.words, dim=64, init="mean")  # 100 -> 64 by PCA
    print(f"  aligned to the Shakespeare vocabulary at dim 64: {report['covered']}/{report['total']} covered "
          f"({report['coverage']:.1%}), projection {report['projection']}, matrix {tuple(matrix.shape)}")


# --------------------------------------------------------------------------- SST-2 hook
# HOOK for the classification benchmark (issue 7: "SST-2 accuracy of the LSTM recipe with and
# without vectors trained on the SST-2 training text"). Off by default (--sst2): it trains two
# LSTM classifiers. The classification owner may replace or extend it.


def sst2_lstm_with_vectors(args: argparse.Namespace) -> None:
    """SST-2 dev/test accuracy of configs/sentiment-lstm.yaml without and with GloVe vectors."""
    import json

    from lmforge.tasks.classify import finetune

    data = SHARED / "sst2"
    if not (data / "train.tsv").is_file():
        print(f"\nSST-2: {data} not found, skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "sst2_train.txt"  # the training sentences only, one document per line
        rows = (data / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
        corpus.write_text("\n".join(r.split("\t")[0] for r in rows) + "\n", encoding="utf-8")
        t0 = time.perf_counter()
        vecs = train_glove(corpus, dim=64, window=10, min_count=2, epochs=args.epochs, documents="lines",
                           x_max=10, device=args.device, log_fn=lambda line: None)
        vectors = vecs.save(tmp / "sst2_vectors.txt")
        print(f"\nSST-2 GloVe: {len(vecs):,} words x 64 in {time.perf_counter() - t0:.1f} s")
        for name, extra in (("random embeddings", {}), ("GloVe (SST-2 train)", {"vectors": str(vectors)})):
            t0 = time.perf_counter()
            run = finetune(data, config=ROOT / "configs" / "sentiment-lstm.yaml", out=tmp / name.split()[0],
                           overrides=["train.progress=false"], log=lambda *a: None,
                           epochs=args.sst2_epochs, **extra)
            summary = json.loads((run / "summary.json").read_text())
            scores = "  ".join(f"{split} acc {summary[split]['accuracy']:.3f} macro-F1 {summary[split]['macro_f1']:.3f}"
                               for split in ("dev", "test") if split in summary)
            print(f"  lstm, {name:<20} {scores}  {time.perf_counter() - t0:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--x-max", type=float, default=10.0, help="10 as glove's demo.sh on small corpora; the paper uses 100")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--verbose", action="store_true", help="print every epoch")
    p.add_argument("--sst2", action="store_true", help="also run the SST-2 LSTM comparison (minutes)")
    p.add_argument("--sst2-epochs", type=int, default=10)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vecs = speed_and_similarity(args)
    glove_sample(vecs)
    if args.sst2:
        sst2_lstm_with_vectors(args)


if __name__ == "__main__":
    main()
