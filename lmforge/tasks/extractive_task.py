"""Extractive summarization, the task: sentence splitting, options, the ROUGE oracle, documents, the Trainer task."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config, ConfigError, parse_section
from ..data.parallel import ParallelSplit
from ..eval.metrics import rouge
from ..models.extractive import SentenceScorer

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"'])")
# ... unless the period belongs to one of these abbreviations (scientific prose)
_ABBREVIATIONS = re.compile(r"(\b(?:e\.g|i\.e|et al|cf|vs|Fig|Figs|Eq|Eqs|Sec|Tab|Ref|No|approx|"
                            r"resp|Dr|Mr|Ms|Prof|St|etc)|\b[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at . ! ? followed by a capital, digit or bracket.

    >>> split_sentences("We propose X (see Fig. 2). It works well! Results in Table 1.")
    ['We propose X (see Fig. 2).', 'It works well!', 'Results in Table 1.']
    """
    pieces = [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    out: list[str] = []
    for piece in pieces:
        if out and _ABBREVIATIONS.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"  # "Fig." / "et al." / an initial did not end a sentence
        else:
            out.append(piece)
    return out


def lead(texts: Sequence[str], k: int = 1) -> list[str]:
    """The Lead-k baseline: the first k sentences of each text."""
    return [" ".join(split_sentences(t)[:k]) for t in texts]


# --------------------------------------------------------------------------- options


@dataclass
class ExtractiveOptions:
    """The `task:` section of an extractive-summarization config."""

    kind: str = "summarize"
    select: int = 1  # sentences in a summary
    max_sentences: int = 32  # sentences read per document (later ones are never selected)
    sentence_len: int = 64  # tokens per sentence (longer ones truncated)
    train_split: str = "train"
    val_split: str = "val"
    source_field: str = "source"
    target_field: str = "target"
    base: str = ""  # a run whose backbone (and tokenizer) start the sentence encoder
    src: str = ""  # plain-text parallel files: source / summary suffixes
    tgt: str = ""

    @classmethod
    def from_config(cls, cfg: Config) -> "ExtractiveOptions":
        """Parse and check `cfg.task`, naming any unknown key or bad value."""
        opts = parse_section(cls, cfg.task, "task", source="extractive config")
        for name in ("select", "max_sentences", "sentence_len"):
            if getattr(opts, name) < 1:
                raise ConfigError(f"task.{name} must be >= 1, got {getattr(opts, name)}")
        return opts


# --------------------------------------------------------------------------- data


@dataclass
class Documents:
    """Sentence-split documents, their token ids, and oracle target distributions."""

    sentences: list[list[str]]
    ids: list[list[np.ndarray]]
    targets: list[np.ndarray]  # (n_sentences,) oracle distribution, sums to 1
    references: list[list[str]]
    truncated: int = 0  # sentences cut to sentence_len

    def __len__(self) -> int:
        return len(self.sentences)


def oracle(sentences: list[str], reference: str, k: int) -> list[int]:
    """Greedy ROUGE oracle: add the sentence that most raises (R1 + R2) F of the selection."""
    chosen: list[int] = []
    best = 0.0
    for _ in range(min(k, len(sentences))):
        gains = []
        for i in range(len(sentences)):
            if i in chosen:
                continue
            summary = " ".join(sentences[j] for j in sorted(chosen + [i]))
            r = rouge([summary], [reference])
            gains.append((r["rouge1"] + r["rouge2"], i))
        value, i = max(gains)
        if value <= best and chosen:
            break
        chosen.append(i)
        best = value
    return sorted(chosen)


def prepare_documents(split: ParallelSplit, tokenizer: Any, opts: ExtractiveOptions,
                      with_oracle: bool = True) -> Documents:
    """Split sources into sentences, tokenize them, and label the oracle sentences."""
    docs = Documents([], [], [], [])
    for source, summary, refs in zip(split.sources, split.targets, split.references):
        sentences = split_sentences(source)[: opts.max_sentences] or [source]
        ids = []
        for row in tokenizer.encode_batch(sentences):
            if len(row) > opts.sentence_len:
                row, docs.truncated = row[: opts.sentence_len], docs.truncated + 1
            ids.append(np.array(row or [tokenizer.unk_id or 0], dtype=np.int64))
        target = np.zeros(len(sentences), dtype=np.float32)
        if with_oracle:  # train towards the sentences closest to the (first) reference
            target[oracle(sentences, summary, opts.select)] = 1.0
            target /= target.sum()
        docs.sentences.append(sentences)
        docs.ids.append(ids)
        docs.targets.append(target)
        docs.references.append(refs)
    return docs


def collate_documents(docs: Documents, rows: Sequence[int], pad_id: int,
                      device: torch.device) -> tuple[torch.Tensor, ...]:
    """Pad documents into (ids (B, N, T), tok_mask (B, N, T), sent_mask (B, N), targets (B, N))."""
    N = max(len(docs.ids[i]) for i in rows)
    T = max(len(s) for i in rows for s in docs.ids[i])
    ids = np.full((len(rows), N, T), pad_id, dtype=np.int64)
    tok_mask = np.zeros((len(rows), N, T), dtype=bool)
    targets = np.zeros((len(rows), N), dtype=np.float32)
    for b, i in enumerate(rows):
        for n, sent in enumerate(docs.ids[i]):
            ids[b, n, : len(sent)] = sent
            tok_mask[b, n, : len(sent)] = True
        targets[b, : len(docs.targets[i])] = docs.targets[i]
    sent_mask = tok_mask.any(-1)
    return tuple(torch.from_numpy(a).to(device) for a in (ids, tok_mask, sent_mask, targets))


def select(scores: torch.Tensor, n_sentences: Sequence[int], k: int) -> list[list[int]]:
    """Top-k sentence indices of each row, in document order."""
    out = []
    for row, n in zip(scores.tolist(), n_sentences):
        order = sorted(range(n), key=lambda i: -row[i])[:k]
        out.append(sorted(order))
    return out


# --------------------------------------------------------------------------- the task


class ExtractiveTask:
    """Train the scorer towards oracle sentences; validate by ROUGE of the selected sentences."""

    metric_names = ["rouge1", "rouge2", "rougeL"]
    monitor = ("rouge2", "max")
    keep_best = True

    def __init__(self, model: SentenceScorer, train: Documents, val: Documents, opts: ExtractiveOptions,
                 batch_size: int, pad_id: int, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.model, self.train, self.val, self.opts = model, train, val, opts
        self.batch_size, self.pad_id, self.device = batch_size, pad_id, torch.device(device)
        self.seed, self.epoch, self.position = seed, 0, 0
        self._order = self._plan(0)

    def _plan(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.train))

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        """The next batch of documents (shuffled each epoch), on the device."""
        if self.position + self.batch_size > len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._plan(self.epoch)
        rows = self._order[self.position: self.position + self.batch_size]
        self.position += self.batch_size
        return collate_documents(self.train, rows, self.pad_id, self.device)

    def batch_tokens(self, batch: tuple[torch.Tensor, ...]) -> int:
        """Real tokens in the batch."""
        return int(batch[1].sum())

    def loss(self, batch: tuple[torch.Tensor, ...], model: nn.Module | None = None) -> torch.Tensor:
        """Cross-entropy between the sentence softmax and the oracle distribution."""
        return (self.model if model is None else model)(*batch)[1]

    def evaluate(self) -> dict[str, float]:
        """Validation loss and ROUGE-1/2/L of the selected sentences (max over references)."""
        losses, picks = [], []
        for start in range(0, len(self.val), self.batch_size):
            rows = list(range(start, min(start + self.batch_size, len(self.val))))
            batch = collate_documents(self.val, rows, self.pad_id, self.device)
            scores, loss = self.model(*batch)
            losses.append(float(loss) * len(rows))
            picks += select(scores, [len(self.val.ids[i]) for i in rows], self.opts.select)
        summaries = [" ".join(self.val.sentences[i][j] for j in p) for i, p in enumerate(picks)]
        return {"loss": sum(losses) / len(self.val), **rouge(summaries, self.val.references)}

    def state_dict(self) -> dict[str, int]:
        """The data position, for exact resume."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the data position."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._plan(self.epoch)


