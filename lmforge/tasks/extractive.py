"""Extractive summarization: score the sentences of a document and select the best ones.

A summary is often "the key sentences". The model encodes every source sentence with any
lmforge backbone (GRU, LSTM, CNN, GPT, BERT, ...), pools it to one vector, adds the
sentence's position, reads the document's sentence vectors with a small bidirectional GRU
(document context) and gives each sentence a score; a softmax over the document's sentences
is trained towards the oracle: the sentence(s) with the highest ROUGE against the reference.

    lmforge finetune seq2seq --task summarize --data ../shared/data/scitldr \\
        --config configs/summarize-extractive.yaml --out runs/ext
    lmforge evaluate runs/ext --data ../shared/data/scitldr --split test      # ROUGE-1/2/L

    from lmforge.tasks.extractive import load_extractive
    load_extractive("runs/ext").summarize(["First sentence. Second one. Third."])

The run's model_config.json has head "extractive"; config.yaml's `task:` section holds
`ExtractiveOptions`. `task.base` starts the sentence encoder from a pretrained run's backbone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError, ModelConfig, save_config
from ..data.parallel import ParallelSplit, list_splits, read_split, split_off
from ..eval.metrics import rouge
from ..models.build import count_parameters
from ..models.extractive import SentenceScorer, build_extractive
from ..run import CONFIG, MODEL_CONFIG, TOKENIZER, read_model_config, read_run_config
from ..train.checkpoint import (BEST_WEIGHTS, TRAINER_STATE, WEIGHTS, CheckpointError, atomic_write_text,
                                load_weights)
from ..train.loop import Trainer
from ..train.runtime import pick_device

# a sentence ends at . ! or ? followed by space and an upper-case letter, digit or bracket
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
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in cfg.task.items():
            if key not in fields:
                raise ConfigError(f"unknown key 'task.{key}' for extractive summarization; valid: "
                                  f"{', '.join(fields)}")
            typ = type(fields[key].default)
            try:
                kwargs[key] = typ(value)
            except (TypeError, ValueError):
                raise ConfigError(f"task.{key} must be {typ.__name__}, got {value!r}") from None
        opts = cls(**kwargs)
        for name in ("select", "max_sentences", "sentence_len"):
            if getattr(opts, name) < 1:
                raise ConfigError(f"task.{name} must be >= 1, got {getattr(opts, name)}")
        return opts


# --------------------------------------------------------------------------- model


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


# --------------------------------------------------------------------------- fine-tuning


def _tokenizer_and_base(cfg: Config, opts: ExtractiveOptions, train: ParallelSplit, run_dir: Path,
                        resume: bool, log: Callable) -> tuple[Any, dict | None]:
    from ..tokenizers import load_tokenizer, train_tokenizer

    if resume:
        return load_tokenizer(run_dir / TOKENIZER), None
    if opts.base:
        from safetensors.torch import load_file

        base = Path(opts.base)
        base_cfg = read_model_config(base)
        keep = {f: getattr(cfg.model, f) for f in ("head", "pooling", "dropout", "extra")}
        cfg.model = dataclasses.replace(base_cfg, **keep)
        weights = base / BEST_WEIGHTS if (base / BEST_WEIGHTS).is_file() else base / WEIGHTS
        if not weights.is_file():
            raise CheckpointError(f"task.base {base}: no weights there")
        state = {k[len("backbone."):]: v for k, v in load_file(str(weights)).items()
                 if k.startswith("backbone.")}
        log(f"sentence encoder starts from {base} ({base_cfg.arch}, {len(state)} tensors)")
        return load_tokenizer(base / TOKENIZER), state
    tc = cfg.tokenizer
    if tc.path:
        return load_tokenizer(tc.path), None
    tok = train_tokenizer(tc.kind, train.sources + train.targets, vocab_size=tc.vocab_size,
                          lowercase=tc.lowercase, min_frequency=tc.min_frequency)
    log(f"trained a {tc.kind} tokenizer on the {train.name} split: {tok.vocab_size} tokens")
    return tok, None


def finetune(config: Config, resume: bool = False, log: Callable[[str], Any] = print) -> Path:
    """Train a sentence scorer (config.model.head == "extractive"); returns the run directory."""
    cfg = config
    opts = ExtractiveOptions.from_config(cfg)
    cfg.task = dataclasses.asdict(opts)
    run_dir = Path(cfg.out)
    if not resume and (run_dir / TRAINER_STATE).exists():
        raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} "
                          "or choose another --out")
    if not cfg.data.path:
        raise ConfigError("no data: pass --data PATH (a folder of train.jsonl / val.jsonl or a .jsonl)")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    src, tgt = opts.src or None, opts.tgt or None
    train_split = read_split(cfg.data.path, opts.train_split, src, tgt, opts.source_field,
                             opts.target_field, cfg.data.errors)
    if Path(cfg.data.path).is_file() or opts.val_split not in list_splits(cfg.data.path, src, tgt):
        train_split, val_split = split_off(train_split, cfg.data.val_fraction, cfg.train.seed)
    else:
        val_split = read_split(cfg.data.path, opts.val_split, src, tgt, opts.source_field,
                               opts.target_field, cfg.data.errors)
    tokenizer, base_state = _tokenizer_and_base(cfg, opts, train_split, run_dir, resume, log)
    cfg.model.vocab_size = tokenizer.vocab_size
    cfg.model.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    if base_state is not None:  # a pretrained encoder keeps its position table
        opts.sentence_len = min(opts.sentence_len, cfg.model.max_len)
        cfg.task = dataclasses.asdict(opts)
    cfg.model.max_len = max(cfg.model.max_len, opts.sentence_len)
    cfg.model.extra["max_sentences"] = opts.max_sentences
    t0 = time.perf_counter()
    train = prepare_documents(train_split, tokenizer, opts)
    val = prepare_documents(val_split, tokenizer, opts)
    log(f"{len(train)} training / {len(val)} validation documents, oracle labels in "
        f"{time.perf_counter() - t0:.1f}s; {train.truncated + val.truncated} sentences cut to "
        f"{opts.sentence_len} tokens")
    torch.manual_seed(cfg.train.seed)
    model = build_extractive(cfg.model)
    if base_state is not None:
        missing, unexpected = model.backbone.load_state_dict(base_state, strict=False)
        if unexpected:
            raise CheckpointError(f"task.base: tensors that do not fit the backbone: {unexpected[:5]}")
    model.to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG)
    atomic_write_text(run_dir / MODEL_CONFIG, cfg.model.to_json())
    if not resume:
        tokenizer.save(run_dir / TOKENIZER)
    log(f"extractive {cfg.model.arch}: {count_parameters(model) / 1e6:.2f}M parameters | "
        f"vocab {tokenizer.vocab_size} | device {device}")
    task = ExtractiveTask(model, train, val, opts, cfg.train.batch_size, cfg.model.pad_id,
                          seed=cfg.train.seed, device=device)
    trainer = Trainer(task, cfg.train, run_dir, resume=resume, log=log)
    metrics = trainer.fit()
    if metrics:
        log(f"done: step {trainer.step}, val ROUGE-1/2/L {metrics['rouge1']:.2f} / "
            f"{metrics['rouge2']:.2f} / {metrics['rougeL']:.2f} -> {run_dir}")
    return run_dir


# --------------------------------------------------------------------------- a trained run


class ExtractiveRun:
    """A trained sentence scorer with its tokenizer and options."""

    def __init__(self, path: Path, model: SentenceScorer, tokenizer: Any, opts: ExtractiveOptions) -> None:
        self.path, self.model, self.tokenizer, self.opts = path, model, tokenizer, opts

    @torch.no_grad()
    def summarize(self, texts: str | Sequence[str], k: int | None = None,
                  batch_size: int = 32) -> str | list[str]:
        """The k best sentences of each text, in document order."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        split = ParallelSplit("input", items, items, [[t] for t in items])
        docs = prepare_documents(split, self.tokenizer, self.opts, with_oracle=False)
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(docs), batch_size):
            rows = list(range(start, min(start + batch_size, len(docs))))
            ids, tok_mask, sent_mask, _ = collate_documents(docs, rows, self.model.config.pad_id, device)
            scores, _ = self.model(ids, tok_mask, sent_mask)
            picks = select(scores, [len(docs.ids[i]) for i in rows], k or self.opts.select)
            out += [" ".join(docs.sentences[i][j] for j in p) for i, p in zip(rows, picks)]
        return out[0] if single else out


def load_extractive(path: str | Path, device: str = "auto") -> ExtractiveRun:
    """Reload an extractive run (best.safetensors when present)."""
    from ..tokenizers import load_tokenizer

    path = Path(path)
    model_config = read_model_config(path)
    if model_config.head != "extractive":
        raise ConfigError(f"{path}: model.head={model_config.head!r} is not an extractive run")
    cfg = read_run_config(path)
    opts = ExtractiveOptions.from_config(cfg)
    model = build_extractive(model_config)
    weights = path / BEST_WEIGHTS if (path / BEST_WEIGHTS).is_file() else path / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path}: no weights ({WEIGHTS}); the run has not saved a checkpoint yet")
    load_weights(model, weights)
    model.to(pick_device(device)).eval()
    return ExtractiveRun(path, model, load_tokenizer(path / TOKENIZER), opts)


def evaluate(run: ExtractiveRun | str | Path, data: str | Path, split: str = "test", limit: int = 0,
             out_dir: str | Path | None = None) -> dict[str, Any]:
    """ROUGE-1/2/L of the selected sentences (max over references and first reference only);
    writes `<out_dir>/<split>.jsonl` and `<split>.scores.json` (default RUN/eval)."""
    if not isinstance(run, ExtractiveRun):
        run = load_extractive(run)
    o = run.opts
    data_split = read_split(data, split, o.src or None, o.tgt or None, o.source_field, o.target_field)
    n = len(data_split) if limit <= 0 else min(limit, len(data_split))
    sources, refs = data_split.sources[:n], data_split.references[:n]
    hyps = run.summarize(sources)
    multi, first = rouge(hyps, refs), rouge(hyps, [[r[0]] for r in refs])
    result = {"split": split, "examples": n, **multi, **{f"{k}_first_ref": v for k, v in first.items()}}
    out_dir = Path(out_dir) if out_dir else run.path / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as fh:
        for s, h, r in zip(sources, hyps, refs):
            per = {k: round(v, 2) for k, v in rouge([h], [r]).items()}
            fh.write(json.dumps({"source": s, "hypothesis": h, "references": r, **per},
                                ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / f"{split}.scores.json", json.dumps(result, indent=2))
    result["outputs"] = str(out_dir / f"{split}.jsonl")
    return result


def evaluate_cli(argv: list[str]) -> int:
    """lmforge evaluate RUN --data PATH --split NAME (extractive runs)"""
    parser = argparse.ArgumentParser(prog="lmforge evaluate",
                                     description="Select sentences with an extractive run and score them.")
    parser.add_argument("run")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--out", help="folder for outputs (default RUN/eval)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--beams", type=int, default=None, help=argparse.SUPPRESS)  # seq2seq option
    parser.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    result = evaluate(load_extractive(args.run, args.device), args.data, args.split, args.limit, args.out)
    print(f"{args.split}: {result['examples']} documents: ROUGE-1 {result['rouge1']:.2f}  "
          f"ROUGE-2 {result['rouge2']:.2f}  ROUGE-L {result['rougeL']:.2f}  (max over references)")
    print(f"  against the first reference only: ROUGE-1 {result['rouge1_first_ref']:.2f}  "
          f"ROUGE-2 {result['rouge2_first_ref']:.2f}  ROUGE-L {result['rougeL_first_ref']:.2f}")
    print(f"outputs: {result['outputs']}")
    return 0
