"""GloVe word vectors (Pennington et al., 2014) trained in PyTorch, plus the `lmforge glove` CLI.

    vecs = train_glove("corpus.txt", dim=100, window=10, min_count=5, epochs=25)
    vecs.save("vectors.txt")                     # standard GloVe text format
    vecs.nearest("king")

Pipeline, as in the reference C implementation:
1. vocabulary: word counts, keep words seen >= min_count times (at most max_vocab, most
   frequent first); out-of-vocabulary words are dropped before windowing, as glove's cooccur.c does;
2. co-occurrence counts X_ij: every pair of words at distance d <= window inside a document adds
   1/d to X_ij and to X_ji (symmetric window). Built chunk by chunk into sparse (key, value)
   arrays, so memory is bounded by a chunk plus the distinct pairs, never by the corpus;
3. weighted least squares over the nonzero X_ij:
       J = sum f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2,  f(x) = min(1, (x / x_max)^alpha)
   with AdaGrad on shuffled mini-batches; the vectors written out are w + w~.

Tokenization is lowercase + the regex `\\w+(?:'\\w+)*` (runs of letters/digits, keeping inner
apostrophes: "o'er", "king's"); punctuation is dropped. A file's documents are its paragraphs
(blank-line separated) by default, or its lines (`documents="lines"`, glove's own convention);
windows never cross a document boundary.

Word-vector files, neighbours, analogies and model embeddings live in `vectors.py` and are
re-exported here.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from .vectors import WordVectors, align_embeddings, load_into_embedding

__all__ = [
    "Cooccurrence",
    "WordVectors",
    "align_embeddings",
    "build_cooccurrence",
    "build_vocab",
    "cli",
    "load_into_embedding",
    "tokenize",
    "train_glove",
]

log = logging.getLogger(__name__)

# the counting half (tokens, vocabulary, co-occurrences) is glove_counts.py
from .glove_counts import (Corpus, Cooccurrence, _documents, _pairs, _paths, _reduce,  # noqa: F401
                           build_cooccurrence, build_vocab, tokenize)


# --------------------------------------------------------------------------- training


def _device(device: str | torch.device | None) -> torch.device:
    """'auto' / None -> CUDA, then MPS, then CPU (train/runtime.py's chooser)."""
    from ..train.runtime import pick_device

    return pick_device("auto" if device is None else str(device))


class GloVeModel:
    """Word and context vectors with biases, trained by per-pair AdaGrad as in glove.c.

    No autograd: the gradients of 1/2 f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 are one line
    each, and applying them with `index_add_` touches only the rows a batch uses.
    """

    def __init__(self, vocab_size: int, dim: int, generator: torch.Generator, device: torch.device):
        def init(*shape: int) -> torch.Tensor:  # glove.c: uniform(-0.5, 0.5) / dim, biases too
            return ((torch.rand(*shape, generator=generator) - 0.5) / dim).to(device)

        self.w, self.w_ctx = init(vocab_size, dim), init(vocab_size, dim)  # (V, D)
        self.b, self.b_ctx = init(vocab_size), init(vocab_size)  # (V,)
        # AdaGrad sums of squared gradients, starting at 1 as glove.c's gradsq (first step = lr * grad)
        self.g2 = [torch.ones_like(t) for t in (self.w, self.w_ctx, self.b, self.b_ctx)]

    def step(self, i: torch.Tensor, j: torch.Tensor, log_x: torch.Tensor, f: torch.Tensor, lr: float) -> torch.Tensor:
        """One AdaGrad update on the pairs (i, j); returns the batch loss (before the update)."""
        wi, wj = self.w[i], self.w_ctx[j]  # (B, D)
        diff = (wi * wj).sum(dim=1) + self.b[i] + self.b_ctx[j] - log_x  # (B,)
        fdiff = f * diff  # dJ/db_i = dJ/db~_j, (B,)
        loss = 0.5 * (fdiff * diff).sum()
        grad_wi = (fdiff[:, None] * wj).clamp_(-100, 100)  # (B, D); glove.c clips at 100 too
        grad_wj = (fdiff[:, None] * wi).clamp_(-100, 100)
        for param, g2, rows, grad in zip(
            (self.w, self.w_ctx, self.b, self.b_ctx), self.g2, (i, j, i, j), (grad_wi, grad_wj, fdiff, fdiff)
        ):
            g2.index_add_(0, rows, grad * grad)
            param.index_add_(0, rows, grad / g2[rows].sqrt_(), alpha=-lr)  # each pair's own AdaGrad step
        return loss

    def vectors(self) -> torch.Tensor:
        """w + w~, the vectors the GloVe paper reports (both halves carry signal)."""
        return self.w + self.w_ctx  # (V, D)


def train_glove(
    corpus: Corpus,
    dim: int = 100,
    window: int = 10,
    min_count: int = 5,
    max_vocab: int | None = None,
    epochs: int = 25,
    x_max: float = 100.0,
    alpha: float = 0.75,
    lr: float = 0.05,
    batch_size: int = 4096,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    documents: str = "paragraphs",
    vocab: list[str] | None = None,
    log_fn: Callable[[str], None] | None = None,
) -> WordVectors:
    """Train GloVe vectors on a corpus (text file(s) or an iterable of strings); returns WordVectors.

    Defaults are the paper's (x_max 100, alpha 0.75, AdaGrad at lr 0.05, window 10). A batch is
    `batch_size` nonzero X_ij, reshuffled every epoch; each pair takes its own AdaGrad step, as
    in glove.c, applied together (pairs sharing a word in one batch see each other's g^2). `vocab` skips counting words (then min_count is unused).
    Timings and sizes are in the result's `info` (cooccur_s, epoch_s, tokens, nnz, losses)
    and are passed line by line to `log_fn` (default: the module logger).
    """
    emit = log_fn or log.info
    if dim < 1 or epochs < 1 or batch_size < 1:  # 0 epochs would save the random start as vectors
        raise ValueError(f"need dim >= 1, epochs >= 1, batch_size >= 1; got {dim}, {epochs}, {batch_size}")
    if _paths(corpus) is None and iter(corpus) is corpus:
        corpus = list(corpus)  # a one-shot iterator: the vocabulary pass would consume it

    t0 = time.perf_counter()
    if vocab is None:
        vocab, counts = build_vocab(corpus, min_count=min_count, max_vocab=max_vocab, documents=documents)
        if not vocab:
            raise ValueError(
                f"no word occurs {min_count}+ times ({len(counts)} distinct words); lower min_count"
            )
    vocab_s = time.perf_counter() - t0
    cooc = build_cooccurrence(corpus, vocab, window=window, documents=documents)
    emit(
        f"vocabulary {len(vocab):,} words ({vocab_s:.2f} s); co-occurrence: {cooc.nnz:,} nonzeros from "
        f"{cooc.n_tokens:,} tokens in {cooc.seconds:.2f} s ({cooc.n_tokens / max(cooc.seconds, 1e-9):,.0f} tokens/s)"
    )
    if cooc.nnz == 0:
        raise ValueError("no co-occurring words: the corpus is too small for this vocabulary / window")

    dev = _device(device)
    g = torch.Generator().manual_seed(seed)
    model = GloVeModel(len(vocab), dim, g, dev)
    rows = torch.from_numpy(cooc.rows).to(dev)  # (nnz,)
    cols = torch.from_numpy(cooc.cols).to(dev)
    x = torch.from_numpy(cooc.values).float()
    log_x = x.log().to(dev)  # (nnz,)
    weight = (x / x_max).pow(alpha).clamp(max=1.0).to(dev)  # f(X_ij), (nnz,)

    epoch_s: list[float] = []
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        order = torch.randperm(cooc.nnz, generator=g).to(dev)
        total = torch.zeros((), device=dev)
        for start in range(0, cooc.nnz, batch_size):
            batch = order[start : start + batch_size]  # (B,)
            total += model.step(rows[batch], cols[batch], log_x[batch], weight[batch], lr)
        mean_loss = total.item() / cooc.nnz  # .item() also waits for the device
        if not math.isfinite(mean_loss):
            raise ValueError(f"GloVe loss became {mean_loss} at epoch {epoch}; lower lr (now {lr})")
        epoch_s.append(time.perf_counter() - t)
        losses.append(mean_loss)
        emit(f"epoch {epoch}/{epochs}: loss {mean_loss:.4f}  {epoch_s[-1]:.2f} s  "
             f"({cooc.n_tokens / epoch_s[-1]:,.0f} corpus tokens/s)")

    info = {
        "tokens": cooc.n_tokens,
        "tokens_in_vocab": cooc.n_kept,
        "vocab_size": len(vocab),
        "nnz": cooc.nnz,
        "vocab_s": vocab_s,
        "cooccur_s": cooc.seconds,
        "epoch_s": epoch_s,
        "losses": losses,
        "device": str(dev),
        "params": {"dim": dim, "window": window, "min_count": min_count, "x_max": x_max,
                   "alpha": alpha, "lr": lr, "batch_size": batch_size, "epochs": epochs, "seed": seed},
    }
    return WordVectors(list(vocab), model.vectors().cpu(), info=info)


# --------------------------------------------------------------------------- command line


def _print_table(title: str, rows: list[tuple[str, float]]) -> None:
    """A ranked neighbour list: rank, word, cosine."""
    print(title)
    width = max((len(w) for w, _ in rows), default=4)
    for rank, (word, sim) in enumerate(rows, start=1):
        print(f"  {rank:>3}  {word:<{width}}  {sim:+.4f}")


def cli(argv: list[str]) -> int:
    """`lmforge glove train|nearest|analogy ...`; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="lmforge glove", description="Train GloVe vectors and query them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lmforge glove train --data corpus.txt --out vectors.txt --dim 50\n"
               "  lmforge glove nearest vectors.txt king queen -k 5\n"
               "  lmforge glove analogy vectors.txt man king woman")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train GloVe vectors on text files")
    p.add_argument("--data", nargs="+", required=True, help="UTF-8 text file(s)")
    p.add_argument("--out", required=True, help="output vectors file")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--max-vocab", type=int, default=None)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--x-max", type=float, default=100.0)
    p.add_argument("--alpha", type=float, default=0.75)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--documents", choices=["paragraphs", "lines"], default="paragraphs",
                   help="what a context window may not cross: blank lines (default) or every line")
    p.add_argument("--format", choices=["glove", "word2vec"], default="glove")

    p = sub.add_parser("nearest", help="cosine nearest neighbours of words")
    p.add_argument("vectors")
    p.add_argument("words", nargs="+")
    p.add_argument("-k", type=int, default=10)

    p = sub.add_parser("analogy", help="a is to b as c is to ? (b - a + c)")
    p.add_argument("vectors")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("c")
    p.add_argument("-k", type=int, default=10)

    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            from ..outputs import check_output

            check_output(args.out, inputs=args.data)  # the corpus is never replaced by vectors
            vecs = train_glove(
                [Path(d) for d in args.data], dim=args.dim, window=args.window, min_count=args.min_count,
                max_vocab=args.max_vocab, epochs=args.epochs, x_max=args.x_max, alpha=args.alpha, lr=args.lr,
                batch_size=args.batch_size, seed=args.seed, device=args.device, documents=args.documents,
                log_fn=lambda line: print(line, flush=True),
            )
            vecs.save(args.out, format=args.format)
            info = vecs.info
            print(f"wrote {len(vecs):,} x {vecs.dim} vectors to {args.out} "
                  f"(co-occurrence {info['cooccur_s']:.1f} s, training {sum(info['epoch_s']):.1f} s)")
            return 0
        vecs = WordVectors.load(args.vectors)
        if args.k < 1:
            raise ValueError(f"-k must be >= 1, got {args.k}")
        if args.command == "nearest":
            for i, word in enumerate(args.words):
                if i:
                    print()
                _print_table(f"nearest to {word!r}:", vecs.nearest(word, k=args.k))
        else:
            _print_table(f"{args.a} : {args.b} :: {args.c} : ?   ({args.b} - {args.a} + {args.c})",
                         vecs.analogy(args.a, args.b, args.c, k=args.k))
        return 0
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
