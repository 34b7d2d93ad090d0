"""Exact and near-duplicate documents, in bounded memory.

    index = DuplicateIndex(mode="near", threshold=0.5, window=100_000)
    index.check("Some document text ...")     # None (new) or ("exact" | "near", id of the first copy)

Exact duplicates compare a 128-bit BLAKE2 digest of the normalised text (case folded,
whitespace collapsed). Near duplicates compare MinHash signatures of word shingles
(Broder 1997) through locality-sensitive hashing (`datasketch.MinHashLSH`): the LSH bands
propose candidates whose Jaccard similarity is probably above the threshold, and the
signatures' estimated Jaccard confirms them, which cuts the band false positives.

Memory is bounded by `window`: only the most recent `window` documents stay in the
near-duplicate index (a copy further back than that is not found), and the last
`20 * window` digests in the exact index.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections import OrderedDict, deque
from typing import Literal

import numpy as np

from ..config import ConfigError
from . import need

MODES = ("exact", "near", "none")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Case-folded, NFKC, whitespace collapsed: the form duplicates are compared in.

    >>> normalize("  The  Cat\\nsat ")
    'the cat sat'
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def digest(text: str, normalized: bool = False) -> bytes:
    norm = text if normalized else normalize(text)
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()


def shingles(text: str, size: int = 3, normalized: bool = False) -> list[bytes]:
    """Distinct word `size`-grams of the normalised text, punctuation dropped (the whole
    text if it is shorter).

    >>> shingles('a "b" c, d', 3)
    [b'a b c', b'b c d']
    """
    words = _WORD.findall(text if normalized else normalize(text)) or [""]
    if len(words) <= size:
        return [" ".join(words).encode("utf-8")]
    grams = dict.fromkeys(map(" ".join, zip(*(words[i:] for i in range(size)))))
    return [g.encode("utf-8") for g in grams]


class DuplicateIndex:
    """Remembers recent documents and says whether a new one repeats one of them."""

    def __init__(self, mode: str = "near", threshold: float = 0.5, num_perm: int = 128,
                 shingle: int = 3, window: int = 100_000, seed: int = 1) -> None:
        if mode not in MODES:
            raise ConfigError(f"--dedup must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        if window <= 0:
            raise ConfigError(f"--window must be a positive number of documents, got {window}")
        self.mode, self.threshold, self.num_perm = mode, threshold, num_perm
        self.shingle, self.window, self.seed = shingle, window, seed
        self.exact: OrderedDict[bytes, int] = OrderedDict()
        self.count = 0
        if mode == "near":
            datasketch = need("datasketch", "datasketch")
            MinHash, MinHashLSH = datasketch.MinHash, datasketch.MinHashLSH
            self._minhash = MinHash
            self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
            self.signatures: dict[int, np.ndarray] = {}
            self.recent: deque[int] = deque()
            # one permutation table for every signature (MinHash would rebuild it per document)
            self._template = MinHash(num_perm=num_perm, seed=seed, scheme="affine32")

    def check(self, text: str) -> tuple[Literal["exact", "near"], int] | None:
        """None when `text` is new (and remember it), else the kind of copy and the index of
        the earlier document it repeats."""
        if self.mode == "none":
            return None
        doc_id = self.count
        self.count += 1
        norm = normalize(text)
        key = digest(norm, normalized=True)
        first = self.exact.get(key)
        if first is not None:
            self.exact.move_to_end(key)
            return "exact", first
        self.exact[key] = doc_id
        if len(self.exact) > 20 * self.window:
            self.exact.popitem(last=False)
        if self.mode == "near":
            return self._near(doc_id, norm)
        return None

    def _near(self, doc_id: int, norm: str) -> tuple[Literal["near"], int] | None:
        # CRC-32 of each shingle: a C call, 10x cheaper than datasketch's default SHA-1, and
        # enough for MinHash (the random affine permutations do the mixing)
        m = self._minhash(num_perm=self.num_perm, seed=self.seed, hashfunc=zlib.crc32,
                          permutations=self._template.permutations, scheme="affine32")
        m.update_batch(shingles(norm, self.shingle, normalized=True))
        for other in self.lsh.query(m):
            sig = self.signatures[other]
            if float(np.mean(sig == m.hashvalues)) >= self.threshold:  # estimated Jaccard
                return "near", other
        self.lsh.insert(doc_id, m, check_duplication=False)
        self.signatures[doc_id] = m.hashvalues
        self.recent.append(doc_id)
        if len(self.recent) > self.window:
            old = self.recent.popleft()
            self.lsh.remove(old)
            del self.signatures[old]
        return None


def jaccard(a: str, b: str, shingle: int = 3) -> float:
    """Exact Jaccard similarity of two texts' shingle sets (for tests and benchmarks)."""
    x, y = set(shingles(a, shingle)), set(shingles(b, shingle))
    return len(x & y) / max(len(x | y), 1)
