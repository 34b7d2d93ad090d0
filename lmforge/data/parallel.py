"""Source/target pairs for translation and summarization: reading, encoding, batching.

Two layouts, any split names:

    data/train.de  data/train.en  data/val.de ...       one sentence a line; line i of one file
                                                        translates line i of the other
    data/train.jsonl  data/test.jsonl ...               {"source": ..., "target": ...,
                                                         "references": [...]}  (references optional)

`path` may also be a single .jsonl file (it is then every split asked for).

    split = read_split("data/multi30k", "train", src="de", tgt="en")
    pairs = encode_pairs(split, src_tok, tgt_tok, max_src_len=128, max_tgt_len=128)
    batches = PairBatches(pairs, batch_size=64, pad_id=0, seed=1)
    batch = batches.next()     # Seq2SeqBatch(src, src_mask, tgt_in, tgt_out), on the device

Pairs with an empty source or target are skipped and counted; sources and targets longer
than the limits are truncated and counted; both counts are reported by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch

from ..config import ConfigError
from ..io import json_line
from .holdout import holdout_rows

IGNORE_INDEX = -100  # target padding: no loss


@dataclass
class ParallelSplit:
    """The text pairs of one split, with what was skipped while reading it."""

    name: str
    sources: list[str]
    targets: list[str]
    references: list[list[str]]  # every reference per row; [target] when there is only one
    skipped_empty: int = 0
    origin: str = ""  # the file(s) read, for messages

    def __len__(self) -> int:
        return len(self.sources)


# --------------------------------------------------------------------------- reading


def list_splits(path: str | Path, src: str | None = None, tgt: str | None = None) -> list[str]:
    """Split names available under `path` (folder of `NAME.SRC` + `NAME.TGT` or `NAME.jsonl`)."""
    path = Path(path)
    if path.is_file():
        return [path.stem]
    if not path.is_dir():
        raise ConfigError(f"data path {str(path)!r} does not exist")
    names = {p.stem for p in path.glob("*.jsonl")}
    if src and tgt:
        names |= {p.stem for p in path.glob(f"*.{src}") if (path / f"{p.stem}.{tgt}").is_file()}
    return sorted(names)


def languages(path: str | Path) -> list[str]:
    """Language suffixes of the plain-text files in a folder, e.g. ['de', 'en']."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted({p.suffix[1:] for p in path.iterdir()
                   if p.is_file() and p.suffix and p.suffix not in (".jsonl", ".md", ".txt", ".json")})


def read_split(path: str | Path, split: str, src: str | None = None, tgt: str | None = None,
               source_field: str = "source", target_field: str = "target",
               errors: str = "strict") -> ParallelSplit:
    """Read one split: `path/split.{src,tgt}` text files, `path/split.jsonl`, or `path` itself (.jsonl)."""
    path = Path(path)
    if path.is_file():
        return _read_jsonl(path, split, source_field, target_field, errors)
    if not path.is_dir():
        raise ConfigError(f"data path {str(path)!r} does not exist")
    jsonl = path / f"{split}.jsonl"
    if src and tgt and (path / f"{split}.{src}").is_file():
        return _read_text_pair(path / f"{split}.{src}", path / f"{split}.{tgt}", split, errors)
    if jsonl.is_file():
        return _read_jsonl(jsonl, split, source_field, target_field, errors)
    found = list_splits(path, src, tgt)
    if not (src and tgt) and languages(path):
        raise ConfigError(f"{path}: plain-text parallel files ({', '.join(languages(path))}) need "
                          "--src and --tgt language suffixes")
    expected = f"{split}.{src} and {split}.{tgt}" if src and tgt else f"{split}.jsonl"
    raise ConfigError(f"{path}: no split {split!r} (expected {expected}); "
                      f"found splits: {', '.join(found) or 'none'}")


def _read_lines(path: Path, errors: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text at byte {err.start} "
                          "(set data.errors=replace to substitute bad bytes)") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another sentence
    return [line.rstrip("\r") for line in lines]


def _read_text_pair(src_path: Path, tgt_path: Path, split: str, errors: str) -> ParallelSplit:
    if not tgt_path.is_file():
        raise ConfigError(f"{src_path} has no parallel file {tgt_path}")
    sources, targets = _read_lines(src_path, errors), _read_lines(tgt_path, errors)
    if len(sources) != len(targets):
        raise ConfigError(f"misaligned parallel files: {src_path} has {len(sources)} lines but "
                          f"{tgt_path} has {len(targets)}; line i of one must translate line i of "
                          "the other")
    out = ParallelSplit(split, [], [], [], origin=f"{src_path} + {tgt_path}")
    for s, t in zip(sources, targets):
        s, t = s.strip(), t.strip()
        if not s or not t:
            out.skipped_empty += 1
            continue
        out.sources.append(s)
        out.targets.append(t)
        out.references.append([t])
    return out


def _read_jsonl(path: Path, split: str, source_field: str, target_field: str,
                errors: str) -> ParallelSplit:
    out = ParallelSplit(split, [], [], [], origin=str(path))
    for lineno, line in enumerate(_read_lines(path, errors), 1):
        if not line.strip():
            continue
        row = json_line(path, lineno, line, f"an object with {source_field!r} and {target_field!r}")
        source, target, refs = row.get(source_field), row.get(target_field), row.get("references")
        if source is None:
            raise ConfigError(f"{path}:{lineno}: no {source_field!r} field")
        if target is None and not refs:
            raise ConfigError(f"{path}:{lineno}: no {target_field!r} field")
        if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, str) for r in refs)):
            raise ConfigError(f"{path}:{lineno}: 'references' must be a list of strings")
        if not isinstance(source, str) or (target is not None and not isinstance(target, str)):
            raise ConfigError(f"{path}:{lineno}: {source_field!r} and {target_field!r} must be strings")
        refs = [r.strip() for r in refs or [] if r.strip()]
        target = (target or "").strip() or (refs[0] if refs else "")
        source = source.strip()
        if not source or not target:
            out.skipped_empty += 1
            continue
        out.sources.append(source)
        out.targets.append(target)
        out.references.append(refs or [target])
    return out


def split_off(split: ParallelSplit, fraction: float, seed: int) -> tuple[ParallelSplit, ParallelSplit]:
    """Carve a validation split out of a training split (when the data has none)."""
    train_rows, val_rows = holdout_rows(len(split), fraction, seed)
    if not train_rows:
        raise ConfigError(f"{split.origin}: {len(split)} pairs are too few to hold out a validation split")
    parts = []
    for name, rows in (("train", train_rows), ("val", val_rows)):
        parts.append(ParallelSplit(name, [split.sources[i] for i in rows],
                                   [split.targets[i] for i in rows],
                                   [split.references[i] for i in rows], 0, split.origin))
    parts[0].skipped_empty = split.skipped_empty
    return parts[0], parts[1]


# --------------------------------------------------------------------------- encoding


@dataclass
class EncodedPairs:
    """Token ids of a split: source ends with <eos>; target is bare (bos/eos added in batches)."""

    src: list[np.ndarray]
    tgt: list[np.ndarray]
    bos_id: int
    eos_id: int
    truncated_src: int = 0
    truncated_tgt: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src)


def _special(tokenizer: Any, role: str) -> int:
    value = getattr(tokenizer, f"{role}_id")
    if value is None:
        raise ConfigError(f"the tokenizer has no <{role}> token, which seq2seq decoding needs")
    return int(value)


def encode_sources(texts: list[str], tokenizer: Any, max_len: int) -> tuple[list[np.ndarray], int]:
    """Source ids with a final <eos>, cut to `max_len` tokens; returns (ids, number truncated)."""
    eos = _special(tokenizer, "eos")
    out, cut = [], 0
    for ids in tokenizer.encode_batch(texts):
        if len(ids) + 1 > max_len:
            ids, cut = ids[: max_len - 1], cut + 1
        out.append(np.array(ids + [eos], dtype=np.int64))
    return out, cut


def encode_pairs(split: ParallelSplit, src_tokenizer: Any, tgt_tokenizer: Any, max_src_len: int,
                 max_tgt_len: int) -> EncodedPairs:
    """Tokenize a split; targets are cut to `max_tgt_len - 1` tokens (room for <bos> / <eos>)."""
    if max_src_len < 2 or max_tgt_len < 2:
        raise ConfigError(f"max_src_len and max_tgt_len must be at least 2, got {max_src_len}, {max_tgt_len}")
    src, cut_src = encode_sources(split.sources, src_tokenizer, max_src_len)
    tgt, cut_tgt = [], 0
    for ids in tgt_tokenizer.encode_batch(split.targets):
        if len(ids) > max_tgt_len - 1:
            ids, cut_tgt = ids[: max_tgt_len - 1], cut_tgt + 1
        tgt.append(np.array(ids, dtype=np.int64))
    lengths = np.array([len(t) + 1 for t in tgt]) if tgt else np.zeros(1)
    stats = {"pairs": len(src), "src_tokens": int(sum(len(s) for s in src)),
             "tgt_tokens": int(lengths.sum()), "max_tgt": int(lengths.max())}
    return EncodedPairs(src, tgt, _special(tgt_tokenizer, "bos"), _special(tgt_tokenizer, "eos"),
                        cut_src, cut_tgt, stats)


# --------------------------------------------------------------------------- batching


class Seq2SeqBatch(NamedTuple):
    """One padded batch; every tensor is (B, S) or (B, T)."""

    src: torch.Tensor  # source ids, right-padded with pad_id
    src_mask: torch.Tensor  # True at real source tokens
    tgt_in: torch.Tensor  # <bos> y1 .. yn, padded with pad_id
    tgt_out: torch.Tensor  # y1 .. yn <eos>, padded with -100 (no loss)


def collate(pairs: EncodedPairs, rows: list[int] | np.ndarray, pad_id: int,
            device: torch.device | str = "cpu") -> Seq2SeqBatch:
    """Pad the given rows into one batch.

    >>> # rows with src [5, 3] and [6, 7, 3], tgt [8] and [9, 9]  (bos 2, eos 3, pad 0):
    >>> # src [[5, 3, 0], [6, 7, 3]], tgt_in [[2, 8, 0], [2, 9, 9]], tgt_out [[8, 3, -100], [9, 9, 3]]
    """
    rows = list(rows)
    S = max(len(pairs.src[i]) for i in rows)
    T = max(len(pairs.tgt[i]) for i in rows) + 1
    src = np.full((len(rows), S), pad_id, dtype=np.int64)
    tgt_in = np.full((len(rows), T), pad_id, dtype=np.int64)
    tgt_out = np.full((len(rows), T), IGNORE_INDEX, dtype=np.int64)
    for b, i in enumerate(rows):
        s, t = pairs.src[i], pairs.tgt[i]
        src[b, : len(s)] = s
        tgt_in[b, 0] = pairs.bos_id
        tgt_in[b, 1: len(t) + 1] = t
        tgt_out[b, : len(t)] = t
        tgt_out[b, len(t)] = pairs.eos_id
    lengths = np.array([len(pairs.src[i]) for i in rows])
    mask = np.arange(S)[None, :] < lengths[:, None]  # (B, S)
    device = torch.device(device)

    def put(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)

    return Seq2SeqBatch(put(src), put(mask), put(tgt_in), put(tgt_out))


def length_batches(lengths: np.ndarray, order: np.ndarray, batch_size: int,
                   max_tokens: int) -> list[np.ndarray]:
    """Cut `order` (already length-sorted within chunks) into batches.

    With `max_tokens` > 0 a batch grows while rows x longest row stays within the budget
    (at least one row); otherwise it holds `batch_size` rows.
    """
    if max_tokens <= 0:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start, longest = [], 0, 0
    for j, row in enumerate(order):
        longest_if = max(longest, int(lengths[row]))
        if j > start and longest_if * (j - start + 1) > max_tokens:
            batches.append(order[start:j])
            start, longest_if = j, int(lengths[row])
        longest = longest_if
    if start < len(order):
        batches.append(order[start:])
    return batches


class PairBatches:
    """Shuffled, length-bucketed training batches that run epoch after epoch, resumable.

    Each epoch shuffles the rows, sorts them by length inside chunks of 100 batches (little
    padding, still random), cuts batches and shuffles their order. The epoch's batches follow
    from (seed, epoch) alone, so `state_dict` is just (epoch, position).

    Under torchrun every rank plans the same batches (same seed) and each optimizer step takes
    the next `world_size` batches of that stream, rank r the r-th, crossing epoch boundaries as one
    process would: a 2-rank run trains on exactly the batches of one process with `grad_accum`
    2, and all ranks share one (epoch, position).
    """

    def __init__(self, pairs: EncodedPairs, batch_size: int, pad_id: int, seed: int = 0,
                 max_tokens: int = 0, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1) -> None:
        if len(pairs) == 0:
            raise ConfigError("no training pairs left after skipping empty lines")
        if batch_size <= 0 and max_tokens <= 0:
            raise ConfigError("batch size must be positive")
        self.pairs, self.batch_size, self.pad_id, self.seed = pairs, batch_size, pad_id, seed
        self.max_tokens, self.device = max_tokens, torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.lengths = np.array([max(len(s), len(t) + 1) for s, t in zip(pairs.src, pairs.tgt)])
        self.epoch, self.position = 0, 0
        self._batches = self._plan(self.epoch)

    def _plan(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.pairs))
        per_batch = self.batch_size if self.max_tokens <= 0 else max(
            1, self.max_tokens // max(1, int(self.lengths.mean())))
        chunk = per_batch * 100
        sorted_chunks = [c[np.argsort(self.lengths[c], kind="stable")]
                         for c in np.array_split(order, max(1, -(-len(order) // chunk)))]
        batches = []
        for c in sorted_chunks:
            batches += length_batches(self.lengths, c, self.batch_size, self.max_tokens)
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return len(self._batches)

    def next(self) -> Seq2SeqBatch:
        """The next batch, starting a new epoch when this one is used up."""
        rows = None
        for r in range(self.world_size):  # one process: world_size 1, rank 0
            if self.position >= len(self._batches):
                self.epoch, self.position = self.epoch + 1, 0
                self._batches = self._plan(self.epoch)
            if r == self.rank:
                rows = self._batches[self.position]
            self.position += 1
        return collate(self.pairs, rows, self.pad_id, self.device)

    def state_dict(self) -> dict[str, int]:
        """(epoch, position, seed): enough to redraw the same batches."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a `state_dict`."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._plan(self.epoch)


def eval_batches(pairs: EncodedPairs, batch_size: int, pad_id: int,
                 device: torch.device | str = "cpu",
                 limit: int = 0) -> Iterator[tuple[np.ndarray, Seq2SeqBatch]]:
    """Batches over the first `limit` rows (0 = all), sorted by length; yields (rows, batch)."""
    n = len(pairs) if limit <= 0 else min(limit, len(pairs))
    lengths = np.array([len(pairs.src[i]) for i in range(n)])
    order = np.argsort(-lengths, kind="stable")
    for i in range(0, n, batch_size):
        rows = order[i: i + batch_size]
        yield rows, collate(pairs, rows, pad_id, device)
