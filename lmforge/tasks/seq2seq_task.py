"""The seq2seq task: options (config.yaml `task:`), scoring, the Trainer task, a run's tokenizers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..config import Config, ConfigError, parse_section
from ..data.parallel import (
    EncodedPairs,
    PairBatches,
    ParallelSplit,
    Seq2SeqBatch,
    eval_batches,
)
from ..eval.metrics import bleu, chrf, perplexity, rouge
from ..run import TOKENIZER, read_model_config
from .seq2seq_decode import decode_ids

SOURCE_TOKENIZER = "source_tokenizer.json"  # only with separate source/target vocabularies
KINDS = ("translate", "summarize")


# --------------------------------------------------------------------------- options


@dataclass
class TaskOptions:
    """The `task:` section of a seq2seq config."""

    kind: str = "translate"  # translate | summarize
    src: str = ""  # source language suffix of plain-text files (train.de -> de)
    tgt: str = ""  # target language suffix
    train_split: str = "train"
    val_split: str = "val"  # carved from train (data.val_fraction) when the data has none
    source_field: str = "source"  # JSONL fields
    target_field: str = "target"
    joint_vocab: bool = True  # one tokenizer trained on sources + targets (shared embeddings)
    max_src_len: int = 0  # source tokens kept (longer ones truncated, counted); 0 = model.max_len
    max_tgt_len: int = 0  # target tokens incl. <eos>; 0 = model.max_len
    batch_tokens: int = 0  # > 0: batches by token budget instead of train.batch_size pairs
    beams: int = 5  # decoding (generate / evaluate)
    length_penalty: float = 1.0  # hypothesis score = log-prob / length ** length_penalty
    max_len_a: float = 1.5  # decode at most a * source_length + b tokens
    max_len_b: int = 10
    no_repeat_ngram: int = 0  # > 0: never repeat an n-gram of this size in one output
    eval_decode: int = 0  # validation examples decoded (greedy) at each evaluation; 0 = loss only
    decoder_init: str = ""  # run dir of a pretrained lmforge GPT whose blocks start the decoder

    @classmethod
    def from_config(cls, cfg: Config) -> "TaskOptions":
        """Parse and check `cfg.task`, naming any unknown key or bad value."""
        opts = parse_section(cls, cfg.task, "task", source="seq2seq config")
        if opts.kind not in KINDS:
            raise ConfigError(f"task.kind={opts.kind!r} is not one of {', '.join(KINDS)}")
        if opts.beams < 1:
            raise ConfigError(f"task.beams must be >= 1, got {opts.beams}")
        return opts

    def limits(self, cfg: Config) -> tuple[int, int]:
        """(max source tokens, max target tokens) after defaults."""
        src = self.max_src_len or cfg.model.extra.get("max_src_len", 0) or cfg.model.max_len
        return src, self.max_tgt_len or cfg.model.max_len



# --------------------------------------------------------------------------- scoring


def score(kind: str, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus scores: BLEU and chrF (sacrebleu) for translate, ROUGE-1/2/L for summarize."""
    if kind == "translate":
        return {"bleu": bleu(hypotheses, references), "chrf": chrf(hypotheses, references)}
    r = rouge(hypotheses, references)
    return {"rouge1": r["rouge1"], "rouge2": r["rouge2"], "rougeL": r["rougeL"]}


# --------------------------------------------------------------------------- the task


class Seq2SeqTask:
    """Teacher-forced training on source/target pairs; validation loss (and BLEU / ROUGE-L)."""

    keep_best = True

    def __init__(self, model: nn.Module, train: EncodedPairs, val: EncodedPairs,
                 val_split: ParallelSplit, tokenizer: Any, opts: TaskOptions, batch_size: int,
                 pad_id: int, seed: int = 0, eval_batches: int = 20,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1) -> None:
        self.model, self.opts, self.pad_id = model, opts, pad_id
        self.device = torch.device(device)
        self.train = PairBatches(train, batch_size, pad_id, seed=seed, max_tokens=opts.batch_tokens,
                                 device=self.device, rank=rank, world_size=world_size)
        self.val, self.val_split, self.tokenizer = val, val_split, tokenizer
        self.batch_size, self.eval_batches = batch_size, eval_batches
        self.decode_metric = "bleu" if opts.kind == "translate" else "rougeL"
        self.metric_names = ["ppl"] + ([self.decode_metric] if opts.eval_decode else [])
        self.monitor = (self.decode_metric, "max") if opts.eval_decode else ("loss", "min")

    def next_batch(self) -> Seq2SeqBatch:
        """The next training batch, on the device."""
        return self.train.next()

    def batch_tokens(self, batch: Seq2SeqBatch) -> int:
        """Target tokens in the batch (the translated words per second of MT papers)."""
        return int((batch.tgt_out != -100).sum())

    def loss(self, batch: Seq2SeqBatch, model: nn.Module | None = None) -> torch.Tensor:
        """Label-smoothed cross-entropy of the batch (teacher forcing)."""
        model = self.model if model is None else model
        return model(batch.src, batch.tgt_in, batch.tgt_out, src_mask=batch.src_mask)[1]

    def evaluate(self) -> dict[str, float]:
        """Validation NLL (no label smoothing) over up to eval_batches batches, plus decoding."""
        total, count = 0.0, 0
        for i, (_, batch) in enumerate(eval_batches(self.val, self.batch_size, self.pad_id, self.device)):
            if self.eval_batches and i >= self.eval_batches:
                break
            _, loss = self.model(batch.src, batch.tgt_in, batch.tgt_out, src_mask=batch.src_mask,
                                 label_smoothing=0.0)
            n = int((batch.tgt_out != -100).sum())
            total, count = total + float(loss) * n, count + n
        loss = total / max(count, 1)
        metrics = {"loss": loss, "ppl": perplexity(loss)}
        if self.opts.eval_decode:
            n = min(self.opts.eval_decode, len(self.val))
            ids = decode_ids(self.model, self.val.src[:n], self.val.bos_id, self.val.eos_id,
                             self.pad_id, beams=1, max_len_a=self.opts.max_len_a,
                             max_len_b=self.opts.max_len_b, batch_size=max(self.batch_size, 64),
                             no_repeat_ngram=self.opts.no_repeat_ngram)
            hyps = [self.tokenizer.decode(h) for h in ids]
            metrics[self.decode_metric] = score(self.opts.kind, hyps, self.val_split.references[:n])[
                self.decode_metric]
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The data position, for exact resume."""
        return {"train": self.train.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the data position."""
        self.train.load_state_dict(state["train"])



def _run_tokenizers(run_dir: Path) -> tuple[Any, Any]:
    """A run's (source, target) tokenizers; one file serves both with a joint vocabulary."""
    from ..tokenizers import load_tokenizer

    if not (run_dir / TOKENIZER).is_file():
        raise ConfigError(f"{run_dir}: the target tokenizer {TOKENIZER} is missing from the run")
    tgt = load_tokenizer(run_dir / TOKENIZER)
    extra = read_model_config(run_dir).extra
    if extra.get("src_vocab_size", 0) and not (run_dir / SOURCE_TOKENIZER).is_file():
        raise ConfigError(f"{run_dir}: the run has separate vocabularies but its source tokenizer "
                          f"{SOURCE_TOKENIZER} is missing")
    src = load_tokenizer(run_dir / SOURCE_TOKENIZER) if (run_dir / SOURCE_TOKENIZER).is_file() else tgt
    return src, tgt


