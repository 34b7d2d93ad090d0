"""Word vectors: GloVe / word2vec text files in and out, neighbours, analogies, model embeddings.

    vecs = WordVectors.load("glove.6B.100d.txt")          # GloVe or word2vec text, auto-detected
    vecs.nearest("king", k=5)                              # [(word, cosine), ...]
    vecs.analogy("man", "king", "woman")                   # king - man + woman -> queen
    report = load_into_embedding(model.backbone.embed, vecs, tokenizer_vocab, freeze=False)

Both text formats hold one word per line followed by its numbers, separated by single spaces;
word2vec text adds a first line "N dim". Everything here is also re-exported by
`lmforge.convert.glove`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["WordVectors", "align_embeddings", "load_into_embedding"]

log = logging.getLogger(__name__)

LOW_COVERAGE = 0.10  # below this share of the model vocabulary, warn


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header(fields: list[str]) -> tuple[int, int] | None:
    """(count, dim) when a first line is a word2vec header such as "400000 100", else None."""
    if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
        return int(fields[0]), int(fields[1])
    return None


class WordVectors:
    """A vocabulary of words with one vector each; cosine neighbours and analogies."""

    def __init__(self, words: list[str], vectors: np.ndarray | torch.Tensor, info: dict[str, Any] | None = None):
        vectors = torch.as_tensor(vectors, dtype=torch.float32).detach().cpu()
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"vectors must be (len(words)={len(words)}, dim); got {tuple(vectors.shape)}")
        self.words = list(words)
        self.vectors = vectors  # (N, D)
        self.index = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)  # a duplicated word keeps its first vector
        self.info = info or {}  # training statistics and timings, when trained here
        self._unit: torch.Tensor | None = None

    # ---- lookups

    @property
    def dim(self) -> int:
        """Vector width."""
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> torch.Tensor:
        return self.vectors[self._id(word)]

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words, dim={self.dim})"

    def _id(self, word: str) -> int:
        """Row of `word` (exact match, then lowercased); ValueError naming it otherwise."""
        if word in self.index:
            return self.index[word]
        if word.lower() in self.index:
            return self.index[word.lower()]
        raise ValueError(f"word {word!r} is not in the vocabulary ({len(self)} words)")

    @property
    def unit(self) -> torch.Tensor:
        """Rows scaled to unit length, for cosine similarity (cached)."""
        if self._unit is None:
            self._unit = self.vectors / self.vectors.norm(dim=1, keepdim=True).clamp_min(1e-8)  # (N, D)
        return self._unit

    def _top(self, query: torch.Tensor, k: int, exclude: set[int]) -> list[tuple[str, float]]:
        """The k words of highest cosine with `query`, skipping row ids in `exclude`."""
        query = query / query.norm().clamp_min(1e-8)  # (D,)
        sims = self.unit @ query  # (N,)
        if exclude:
            sims[list(exclude)] = -float("inf")
        k = min(k, len(self) - len(exclude))
        values, ids = sims.topk(max(k, 0))
        return [(self.words[i], float(v)) for v, i in zip(values.tolist(), ids.tolist())]

    def nearest(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The k nearest words to `word` by cosine similarity, the word itself excluded."""
        i = self._id(word)
        return self._top(self.unit[i].clone(), k, {i})

    def analogy(self, a: str, b: str, c: str, k: int = 10) -> list[tuple[str, float]]:
        """Words closest to b - a + c ("a is to b as c is to ?"), the three inputs excluded.

        3CosAdd on unit vectors (Mikolov et al., 2013): analogy("man", "king", "woman") -> queen.
        """
        ia, ib, ic = self._id(a), self._id(b), self._id(c)
        query = self.unit[ib] - self.unit[ia] + self.unit[ic]  # (D,)
        return self._top(query, k, {ia, ib, ic})

    # ---- files

    def save(self, path: str | os.PathLike, format: str = "glove", precision: int = 6) -> Path:
        """Write GloVe text ("word v1 ... vd" per line) or word2vec text (same, after "N dim").

        Numbers get `precision` significant digits. Written to a temp file, then renamed.
        """
        if format not in ("glove", "word2vec"):
            raise ValueError(f"format must be 'glove' or 'word2vec', got {format!r}")
        for i, w in enumerate(self.words):
            if not w or any(ch.isspace() for ch in w):
                raise ValueError(f"word {i} ({w!r}) is empty or contains whitespace; the text format cannot hold it")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fmt = f"%.{precision}g"
        rows = self.vectors.numpy()
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            if format == "word2vec":
                f.write(f"{len(self)} {self.dim}\n")
            for word, row in zip(self.words, rows):
                f.write(word + " " + " ".join(fmt % x for x in row) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, errors: str = "strict", max_words: int | None = None) -> WordVectors:
        """Read GloVe or word2vec text format (told apart by a "N dim" first line).

        A line with the wrong number of values, a value that is not a number, or bytes that
        are not UTF-8 raise ValueError naming the file and line; `errors="replace"` decodes
        bad bytes to U+FFFD instead. `max_words` stops after that many vectors (files are
        usually sorted by frequency). Words containing spaces (a few in glove.840B) load as
        long as the line's trailing fields are exactly `dim` numbers.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: word-vector file not found")
        words: list[str] = []
        rows: list[np.ndarray] = []
        dim: int | None = None
        expected: int | None = None  # word2vec header count
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8", errors=errors)
                except UnicodeDecodeError as e:
                    hint = " (word2vec binary files are not supported; convert to text)" if expected is not None else ""
                    raise ValueError(
                        f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}){hint}; "
                        "pass errors='replace' to load anyway"
                    ) from None
                fields = line.rstrip("\r\n").rstrip(" ").split(" ")
                if fields == [""]:
                    continue  # blank line (often the last)
                if lineno == 1 and (header := _header(fields)) is not None:
                    expected, dim = header
                    continue
                if dim is None:
                    dim = len(fields) - 1
                    if dim < 1:
                        raise ValueError(f"{path}:{lineno}: expected 'word v1 v2 ...', found a single field")
                if len(fields) != dim + 1:
                    # a word with spaces inside is fine; extra or missing numbers are not
                    extra = fields[1 : len(fields) - dim]
                    if len(fields) < dim + 1 or any(_is_float(x) for x in extra):
                        raise ValueError(
                            f"{path}:{lineno}: ragged line: expected {dim} values after the word, "
                            f"found {len(fields) - 1}"
                        )
                    fields = [" ".join(fields[: len(fields) - dim])] + fields[len(fields) - dim :]
                try:
                    row = np.array(fields[1:], dtype=np.float32)  # (D,)
                except ValueError:
                    bad = next(x for x in fields[1:] if not _is_float(x))
                    raise ValueError(f"{path}:{lineno}: value {bad!r} is not a number") from None
                words.append(fields[0])
                rows.append(row)
                if max_words is not None and len(words) >= max_words:
                    break
        if not words:
            raise ValueError(f"{path}: no vectors found (empty file?)")
        if expected is not None and max_words is None and expected != len(words):
            raise ValueError(f"{path}: word2vec header says {expected} vectors but the file has {len(words)}")
        return cls(words, np.stack(rows))


# --------------------------------------------------------------------------- model embeddings


def _projection(vectors: torch.Tensor, dim: int, seed: int) -> tuple[torch.Tensor, str]:
    """A (D_src, dim) matrix mapping vectors to the model width, and its kind.

    Narrowing (dim < D_src): the top `dim` principal axes of the centred vectors (PCA), so the
    most variance survives. Widening: a random matrix with orthonormal rows, which keeps every
    dot product and cosine exactly (the extra directions start at zero).
    """
    src = vectors.shape[1]
    if dim < src:
        centred = vectors - vectors.mean(dim=0)  # (N, D_src)
        _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)  # vh: (D_src, D_src)
        return vh[:dim].T.float(), "pca"  # (D_src, dim)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, src, generator=g, dtype=torch.float64))  # q: (dim, D_src), orthonormal columns
    return q.T.float(), "orthogonal"  # (D_src, dim), orthonormal rows


def align_embeddings(
    vectors: WordVectors | str | os.PathLike,
    vocab: dict[str, int] | list[str],
    dim: int,
    init: str = "random",
    lowercase_fallback: bool = True,
    seed: int = 0,
    pad_id: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """An embedding matrix (V, dim) for a model vocabulary, filled from word vectors.

    Args:
        vectors: WordVectors, or a path to a GloVe / word2vec text file.
        vocab: token -> id, or the list of tokens in id order; V = largest id + 1.
        dim: the model's embedding width. When it differs from the vectors' width, the vectors
            are projected: PCA when narrowing, a random orthonormal map when widening.
        init: rows for tokens without a vector: "random" draws N(0, std of the vectors),
            "mean" uses the mean vector.
        lowercase_fallback: a token missing as written is looked up lowercased ("The" -> "the").
        pad_id: this row is set to zeros.

    Returns (matrix, report) with report = {covered, total, coverage (0-1), lowercase_matches,
    projection, missing_examples}. Warns when coverage is under 10 %.
    """
    if not isinstance(vectors, WordVectors):
        vectors = WordVectors.load(vectors)
    if init not in ("random", "mean"):
        raise ValueError(f"init must be 'random' or 'mean', got {init!r}")
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    if isinstance(vocab, dict):
        pairs = list(vocab.items())
    else:
        pairs = [(token, i) for i, token in enumerate(vocab)]
    if not pairs:
        raise ValueError("vocab is empty")
    size = max(i for _, i in pairs) + 1

    source = vectors.vectors  # (N, D_src)
    projection = None
    if source.shape[1] != dim:
        proj, projection = _projection(source, dim, seed)
        source = source @ proj  # (N, dim)

    g = torch.Generator().manual_seed(seed)
    if init == "random":
        matrix = torch.randn(size, dim, generator=g) * source.std()  # (V, dim)
    else:
        matrix = source.mean(dim=0).expand(size, dim).clone()  # (V, dim)

    covered = lowercase = 0
    missing: list[str] = []
    for token, i in pairs:
        row = vectors.index.get(token)
        if row is None and lowercase_fallback:
            row = vectors.index.get(token.lower())
            lowercase += row is not None
        if row is None:
            if len(missing) < 10:
                missing.append(token)
            continue
        matrix[i] = source[row]
        covered += 1
    if pad_id is not None and 0 <= pad_id < size:
        matrix[pad_id] = 0.0

    total = len(pairs)
    report = {
        "covered": covered,
        "total": total,
        "coverage": covered / total,
        "lowercase_matches": lowercase,
        "projection": projection,
        "missing_examples": missing,
    }
    if report["coverage"] < LOW_COVERAGE:
        warnings.warn(
            f"word vectors cover only {report['coverage']:.1%} of the model vocabulary "
            f"({covered} of {total} tokens); most embeddings stay at their {init} initialisation",
            stacklevel=2,
        )
    log.info("embeddings: %d/%d tokens covered (%.1f%%)", covered, total, 100 * report["coverage"])
    return matrix, report


def load_into_embedding(
    embedding: nn.Embedding,
    vectors: WordVectors | str | os.PathLike,
    vocab: dict[str, int] | list[str],
    freeze: bool = False,
    init: str = "random",
    lowercase_fallback: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Copy aligned word vectors into `embedding` in place; returns the coverage report.

    The padding row (`embedding.padding_idx`) becomes zeros. `freeze=True` turns off the
    weight's gradient: build the optimizer after this call (or skip frozen parameters).
    """
    matrix, report = align_embeddings(
        vectors, vocab, embedding.embedding_dim, init=init, lowercase_fallback=lowercase_fallback,
        seed=seed, pad_id=embedding.padding_idx,
    )
    if matrix.shape[0] > embedding.num_embeddings:
        raise ValueError(
            f"vocabulary has {matrix.shape[0]} ids but the embedding has only {embedding.num_embeddings} rows"
        )
    with torch.no_grad():
        weight = embedding.weight
        weight[: matrix.shape[0]] = matrix.to(device=weight.device, dtype=weight.dtype)
    embedding.weight.requires_grad_(not freeze)
    report["frozen"] = freeze
    return report
