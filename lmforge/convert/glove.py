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
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
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

_WORD_RE = re.compile(r"\w+(?:'\w+)*")

# A corpus: a file path, a list of paths, or an iterable of documents (strings, or token-id
# sequences when the caller has already tokenized).
Corpus = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], Iterable[str], Iterable[Sequence[int]]]


# --------------------------------------------------------------------------- corpus and vocabulary


def tokenize(text: str) -> list[str]:
    """Lowercase words of `text`, punctuation dropped.

    >>> tokenize("O Romeo, Romeo! wherefore art thou Romeo? 'Tis the king's")
    ['o', 'romeo', 'romeo', 'wherefore', 'art', 'thou', 'romeo', 'tis', 'the', "king's"]
    """
    return _WORD_RE.findall(text.lower())


def _paths(corpus: Any) -> list[Path] | None:
    """The file paths a corpus argument names, or None when it is an iterable of documents."""
    if isinstance(corpus, (str, os.PathLike)):
        corpus = [corpus]
    elif not (isinstance(corpus, (list, tuple)) and corpus and all(isinstance(p, os.PathLike) for p in corpus)):
        return None
    paths = [Path(p) for p in corpus]
    for p in paths:
        if not p.is_file():
            raise ValueError(f"{p}: corpus file not found")
    return paths


def _file_documents(path: Path, documents: str, errors: str) -> Iterator[tuple[str, bool]]:
    """Stream (text, starts_new_document) pieces of a file, one line at a time."""
    new_doc = True
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); pass errors='replace' to read it anyway"
                ) from None
            if documents == "lines":
                yield line, True
            elif not line.strip():
                new_doc = True  # a blank line ends the paragraph
            else:
                yield line, new_doc
                new_doc = False


def _documents(corpus: Any, documents: str = "paragraphs", errors: str = "strict") -> Iterator[tuple[Any, bool]]:
    """(piece, starts_new_document) over a corpus; a piece is a string or a token-id sequence."""
    if documents not in ("paragraphs", "lines"):
        raise ValueError(f"documents must be 'paragraphs' or 'lines', got {documents!r}")
    paths = _paths(corpus)
    if paths is not None:
        for p in paths:
            yield from _file_documents(p, documents, errors)
    else:
        for doc in corpus:
            yield doc, True


def build_vocab(
    corpus: Corpus, min_count: int = 5, max_vocab: int | None = None, documents: str = "paragraphs"
) -> tuple[list[str], Counter]:
    """Words seen at least `min_count` times, most frequent first (ties alphabetical), and all counts.

    >>> build_vocab(["a b a c", "a b"], min_count=2)[0]
    ['a', 'b']
    """
    counts: Counter = Counter()
    for piece, _ in _documents(corpus, documents):
        if not isinstance(piece, str):
            raise ValueError("build_vocab needs text; token-id corpora bring their own vocabulary")
        counts.update(tokenize(piece))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_vocab is not None:
        words = words[:max_vocab]
    return words, counts


# --------------------------------------------------------------------------- co-occurrence


@dataclass
class Cooccurrence:
    """Sparse symmetric co-occurrence counts: X[rows[k], cols[k]] = values[k] (nonzeros only)."""

    rows: np.ndarray  # (nnz,) int64
    cols: np.ndarray  # (nnz,) int64
    values: np.ndarray  # (nnz,) float64
    vocab_size: int
    n_tokens: int  # corpus tokens read (in- and out-of-vocabulary)
    n_kept: int  # tokens in the vocabulary, i.e. used for windows
    seconds: float = 0.0

    @property
    def nnz(self) -> int:
        """Number of nonzero entries."""
        return len(self.values)

    def to_dense(self) -> np.ndarray:
        """The full (V, V) matrix; for small vocabularies and tests."""
        dense = np.zeros((self.vocab_size, self.vocab_size))
        dense[self.rows, self.cols] = self.values
        return dense


def _pairs(ids: np.ndarray, docs: np.ndarray, n_context: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Word-id pairs (2, P) and their weights 1/d, for every in-window pair of one chunk.

    Pairs (p, p+d) for d = 1..window inside one document, where the right token is not in the
    first `n_context` positions (the previous chunk's tail, there only as left context).
    ids [7, 8, 9] in one document, window 2 -> pairs (7, 8), (8, 9) weight 1 and (7, 9) weight 0.5.
    """
    lefts, rights, weights = [], [], []
    n = len(ids)
    for d in range(1, window + 1):
        if d >= n:
            break
        left = np.arange(max(0, n_context - d), n - d)  # right token index = left + d >= n_context
        left = left[docs[left] == docs[left + d]]
        lefts.append(left)
        rights.append(left + d)
        weights.append(np.full(len(left), 1.0 / d))
    if not lefts:
        return np.zeros((2, 0), np.int64), np.zeros(0)
    left, right = np.concatenate(lefts), np.concatenate(rights)
    return np.stack([ids[left], ids[right]]), np.concatenate(weights)


def _reduce(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum values of equal keys: ([5, 2, 5], [1., 1., .5]) -> ([2, 5], [1., 1.5])."""
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse.ravel(), weights=values, minlength=len(unique))


def build_cooccurrence(
    corpus: Corpus,
    vocab: list[str] | dict[str, int],
    window: int = 10,
    documents: str = "paragraphs",
    chunk_tokens: int = 1 << 20,
    max_pending: int = 1 << 25,
    errors: str = "strict",
) -> Cooccurrence:
    """Count symmetric, 1/distance-weighted co-occurrences of vocabulary words.

    Args:
        corpus: a text file path (or list of paths), an iterable of documents (strings), or an
            iterable of token-id sequences (ids < len(vocab); no tokenization then).
        vocab: the words (list, id order) or word -> id; other words are dropped before windowing.
        window: the largest distance counted; a pair at distance d adds 1/d both ways.
        chunk_tokens: tokens windowed at once (memory ~ 40 bytes x window x chunk_tokens).
        max_pending: once per-chunk partial sums hold this many entries they are merged.

    Worked example: the document "a b c" with window 2 gives X[a,b] = X[b,c] = 1 and
    X[a,c] = 0.5, each mirrored.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    index = vocab if isinstance(vocab, dict) else {w: i for i, w in enumerate(vocab)}
    size = max(index.values(), default=-1) + 1
    if size == 0:
        raise ValueError("vocabulary is empty (min_count too high for this corpus?)")
    t0 = time.perf_counter()

    partial_keys: list[np.ndarray] = []  # per-chunk reduced (key, value) arrays
    partial_vals: list[np.ndarray] = []
    pending = 0
    n_tokens = n_kept = 0
    buf_ids: list[np.ndarray] = []  # token ids of the chunk being filled
    buf_docs: list[np.ndarray] = []  # the document number of each of them
    buf_len = 0
    doc_no = -1
    tail_ids = np.zeros(0, np.int64)  # last `window` tokens of the previous chunk (context only)
    tail_docs = np.zeros(0, np.int64)

    def flush() -> None:
        nonlocal buf_ids, buf_docs, buf_len, tail_ids, tail_docs, pending
        ids = np.concatenate([tail_ids, *buf_ids])
        docs = np.concatenate([tail_docs, *buf_docs])
        (left, right), weight = _pairs(ids, docs, len(tail_ids), window)
        keys = np.concatenate([left * size + right, right * size + left])  # symmetric: both directions
        keys, vals = _reduce(keys, np.concatenate([weight, weight]))
        partial_keys.append(keys)
        partial_vals.append(vals)
        pending += len(keys)
        if pending > max_pending:  # compact so memory tracks distinct pairs, not chunks seen
            merged = _reduce(np.concatenate(partial_keys), np.concatenate(partial_vals))
            partial_keys[:], partial_vals[:] = [merged[0]], [merged[1]]
            pending = len(merged[0])
        tail_ids, tail_docs = ids[-window:], docs[-window:]
        buf_ids, buf_docs, buf_len = [], [], 0

    for piece, new_doc in _documents(corpus, documents, errors):
        if isinstance(piece, str):
            words = tokenize(piece)
            n_tokens += len(words)
            ids = np.fromiter((i for i in map(index.get, words) if i is not None), dtype=np.int64)
        else:
            ids = np.asarray(piece, dtype=np.int64).ravel()
            n_tokens += len(ids)
            if len(ids) and (ids.min() < 0 or ids.max() >= size):
                raise ValueError(f"token id out of range [0, {size}): min {ids.min()}, max {ids.max()}")
        doc_no += new_doc
        n_kept += len(ids)
        if len(ids):
            buf_ids.append(ids)
            buf_docs.append(np.full(len(ids), doc_no, np.int64))
            buf_len += len(ids)
        if buf_len >= chunk_tokens:
            flush()
    if buf_len:
        flush()

    if partial_keys:
        keys, values = _reduce(np.concatenate(partial_keys), np.concatenate(partial_vals))
    else:
        keys, values = np.zeros(0, np.int64), np.zeros(0)
    return Cooccurrence(
        rows=keys // size, cols=keys % size, values=values, vocab_size=size,
        n_tokens=n_tokens, n_kept=n_kept, seconds=time.perf_counter() - t0,
    )


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
    if dim < 1 or epochs < 0 or batch_size < 1:
        raise ValueError(f"need dim >= 1, epochs >= 0, batch_size >= 1; got {dim}, {epochs}, {batch_size}")
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
    parser = argparse.ArgumentParser(prog="lmforge glove", description="Train GloVe vectors and query them.")
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
