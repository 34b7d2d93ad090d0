"""GloVe's counting half: tokens, the vocabulary and the windowed co-occurrence matrix."""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np


log = logging.getLogger("lmforge.convert.glove")

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


