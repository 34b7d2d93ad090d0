"""Sequence-to-sequence task: translation and summarization with encoder–decoder models.

    lmforge finetune seq2seq --task translate --data data/multi30k --src de --tgt en \\
        --config configs/translate-transformer.yaml --out runs/mt
    lmforge generate runs/mt --prompt "Ein Mann fährt Fahrrad." --beams 5
    lmforge evaluate runs/mt --data data/multi30k --split test_2016_flickr      # BLEU, chrF
    lmforge evaluate runs/sum --data data/scitldr --split test                  # ROUGE-1/2/L

Python:

    from lmforge.tasks.seq2seq import finetune, load_seq2seq, translate
    run_dir = finetune(task="translate", data="data/multi30k", src="de", tgt="en",
                       config="configs/translate-transformer.yaml", out="runs/mt")
    translate(load_seq2seq(run_dir), ["Ein Hund rennt."], beams=5)

Options of the task live in the `task:` section of the config (so config.yaml fully describes
a run); see `TaskOptions`. The run directory is a fine-tuning run: config.yaml,
model_config.json, tokenizer.json (+ source_tokenizer.json with separate vocabularies),
model.safetensors, best.safetensors, trainer_state.pt, metrics.csv, plots/, eval/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config, ConfigError, apply_overrides, config_from_dict, load_config, save_config
from ..data.parallel import (EncodedPairs, PairBatches, ParallelSplit, Seq2SeqBatch, encode_pairs,
                             encode_sources, eval_batches, list_splits, read_split, split_off)
from ..eval.metrics import bleu, chrf, perplexity, rouge
from ..models.build import build_model, count_parameters
from ..run import CONFIG, MODEL_CONFIG, TOKENIZER, read_model_config, read_run_config
from ..train.checkpoint import (BEST_WEIGHTS, TRAINER_STATE, WEIGHTS, CheckpointError, atomic_write_text,
                                load_weights)
from ..train.loop import Trainer
from ..train.runtime import pick_device

SOURCE_TOKENIZER = "source_tokenizer.json"  # only with separate source/target vocabularies
KINDS = ("translate", "summarize")
# the config without --config: a small Transformer over a joint BPE vocabulary
DEFAULTS = ["model.head=seq2seq", "model.arch=transformer", "model.d_model=256", "model.n_layers=3",
            "model.n_heads=8", "model.d_ff=1024", "model.max_len=128", "model.dropout=0.1",
            "model.extra.label_smoothing=0.1", "train.lr=1e-3", "train.min_lr=1e-4", "tokenizer.kind=bpe", "tokenizer.vocab_size=8000",
            "out=runs/seq2seq"]


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
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in cfg.task.items():
            if key not in fields:
                raise ConfigError(f"unknown key 'task.{key}' for seq2seq; valid: {', '.join(fields)}")
            typ = type(fields[key].default)
            try:
                kwargs[key] = typ(value) if typ is not bool else _as_bool(value, key)
            except (TypeError, ValueError):
                raise ConfigError(f"task.{key} must be {typ.__name__}, got {value!r}") from None
        opts = cls(**kwargs)
        if opts.kind not in KINDS:
            raise ConfigError(f"task.kind={opts.kind!r} is not one of {', '.join(KINDS)}")
        if opts.beams < 1:
            raise ConfigError(f"task.beams must be >= 1, got {opts.beams}")
        return opts

    def limits(self, cfg: Config) -> tuple[int, int]:
        """(max source tokens, max target tokens) after defaults."""
        src = self.max_src_len or cfg.model.extra.get("max_src_len", 0) or cfg.model.max_len
        return src, self.max_tgt_len or cfg.model.max_len


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes", "on"):
        return True
    if str(value).lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(key)


# --------------------------------------------------------------------------- decoding


def max_lengths(src_lengths: torch.Tensor, a: float, b: int, cap: int) -> torch.Tensor:
    """Most target tokens per row: a * source length + b, within [1, cap].

    >>> max_lengths(torch.tensor([10, 20]), 1.5, 10, 30).tolist()
    [25, 30]
    """
    return (src_lengths.float() * a + b).ceil().long().clamp(1, cap)


def block_repeats(logp: torch.Tensor, seqs: list[list[int]], n: int) -> None:
    """Forbid (in place) each row's tokens that would repeat one of its n-grams.

    >>> lp = torch.zeros(1, 5); block_repeats(lp, [[1, 2, 3, 1, 2]], 3); lp[0, 3].item()
    -inf
    """
    if n <= 0:
        return
    for r, seq in enumerate(seqs):
        if len(seq) < n - 1:
            continue
        prefix = seq[len(seq) - n + 1:] if n > 1 else []
        banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == prefix]
        if banned:
            logp[r, banned] = float("-inf")


@torch.no_grad()
def greedy_search(model: nn.Module, memory: Any, limits: torch.Tensor, bos: int, eos: int,
                  no_repeat_ngram: int = 0) -> list[list[int]]:
    """Most likely token at each step, for a batch; stops at <eos> or the row's limit."""
    B, device = memory.states.size(0), memory.states.device
    state = model.init_state(memory, max_len=int(limits.max()) + 1)
    tokens = torch.full((B,), bos, dtype=torch.long, device=device)
    out = torch.zeros(B, 0, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(int(limits.max())):
        logp, state = model.step(tokens, state)  # (B, V)
        block_repeats(logp, out.tolist() if no_repeat_ngram else [], no_repeat_ngram)
        tokens = logp.argmax(-1).masked_fill(done, eos)
        out = torch.cat([out, tokens[:, None]], 1)
        done |= (tokens == eos) | (t + 1 >= limits)
        if bool(done.all()):
            break
    return [_strip(row, eos) for row in out.tolist()]


class _Decoding:
    """A seq2seq model as the step function of `lmforge.generate.beam_search`.

    The search state is (model state, history (N, t)): the history of chosen tokens lets the
    step block repeated n-grams, and `reorder` keeps it aligned with the beams. Each input's
    beams stay in rows b*K .. b*K+K-1, so per-input length limits are a fixed (N,) tensor.
    """

    def __init__(self, model: nn.Module, limits: torch.Tensor, eos: int, beams: int,
                 no_repeat_ngram: int) -> None:
        self.model, self.eos, self.no_repeat_ngram = model, eos, no_repeat_ngram
        self.limits, self.beams, self.t = limits, beams, 0

    def step(self, ids: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """Feed the chosen tokens (N, 1); return log-probs (N, V) with limits and n-gram bans applied."""
        model_state, history = state
        if self.t > 0:  # the first call feeds <bos>, which is not part of the output
            history = torch.cat([history, ids], 1)
        logp, model_state = self.model.step(ids[:, 0], model_state)  # (N, V)
        limits = self.limits if logp.size(0) == self.limits.numel() else \
            self.limits.repeat_interleave(self.beams)
        ending = self.t + 1 >= limits  # (N,): these rows must end now
        if bool(ending.any()):
            eos_logp = logp[:, self.eos].clamp_min(-1e4)  # finite even if the model rules <eos> out
            logp[ending] = float("-inf")
            logp[ending, self.eos] = eos_logp[ending]
        block_repeats(logp, history.tolist() if self.no_repeat_ngram else [], self.no_repeat_ngram)
        self.t += 1
        return logp, (model_state, history)

    def reorder(self, state: tuple, rows: torch.Tensor) -> tuple:
        """Keep (and repeat) rows of the model state and of the history."""
        return self.model.reorder_state(state[0], rows), state[1].index_select(0, rows)


@torch.no_grad()
def beam_search(model: nn.Module, memory: Any, limits: torch.Tensor, bos: int, eos: int,
                beams: int = 5, length_penalty: float = 1.0, no_repeat_ngram: int = 0) -> list[list[int]]:
    """The best hypothesis of each input by `lmforge.generate.beam_search` (beams == 1: greedy).

    Scores are log-prob / length ** length_penalty; each input stops at its own limit
    (`max_lengths`: relative to its source), where <eos> is forced; a row is done once its
    `beams` best hypotheses have finished (early stopping, as fairseq).
    """
    from ..generate import beam_search as shared_beam_search

    if beams == 1:
        return greedy_search(model, memory, limits, bos, eos, no_repeat_ngram)
    B, device = memory.states.size(0), memory.states.device
    decoding = _Decoding(model, limits, eos, beams, no_repeat_ngram)
    state = (model.init_state(memory, max_len=int(limits.max()) + 1),
             torch.zeros(B, 0, dtype=torch.long, device=device))
    start = torch.full((B,), bos, dtype=torch.long, device=device)
    results = shared_beam_search(decoding.step, start, state, beams, int(limits.max()), eos_id=eos,
                                 length_penalty=length_penalty, early_stopping=True,
                                 reorder=decoding.reorder)
    return [_strip(hyps[0].tokens, eos) for hyps in results]


def _strip(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


@torch.no_grad()
def decode_ids(model: nn.Module, sources: Sequence[np.ndarray], bos: int, eos: int, pad_id: int,
               beams: int = 5, length_penalty: float = 1.0, max_len_a: float = 1.5,
               max_len_b: int = 10, batch_size: int = 64, no_repeat_ngram: int = 0) -> list[list[int]]:
    """Decode source id arrays (each ending in <eos>) in length-sorted batches; one id list each.

    The encoder runs once per batch; the decoder steps with its caches (see models/seq2seq.py).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cap = model.config.max_len
    order = np.argsort([-len(s) for s in sources], kind="stable")
    results: list[list[int]] = [[] for _ in sources]
    per_batch = max(1, batch_size // beams)
    for start in range(0, len(order), per_batch):
        rows = order[start: start + per_batch]
        S = max(len(sources[i]) for i in rows)
        src = torch.full((len(rows), S), pad_id, dtype=torch.long)
        for b, i in enumerate(rows):
            src[b, : len(sources[i])] = torch.as_tensor(sources[i])
        lengths = torch.tensor([len(sources[i]) for i in rows])
        mask = (torch.arange(S)[None] < lengths[:, None]).to(device)
        memory = model.encode(src.to(device), mask)
        limits = max_lengths(lengths - 1, max_len_a, max_len_b, cap).to(device)
        hyps = beam_search(model, memory, limits, bos, eos, beams, length_penalty, no_repeat_ngram)
        for i, hyp in zip(rows, hyps):
            results[i] = hyp
    model.train(was_training)
    return results


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


# --------------------------------------------------------------------------- tokenizers


def prepare_tokenizers(cfg: Config, opts: TaskOptions, train: ParallelSplit, run_dir: Path,
                       resume: bool, log: Callable) -> tuple[Any, Any]:
    """(source, target) tokenizers: the run's own on resume, a given file, or trained on the
    training split only (BPE by default; one joint vocabulary unless task.joint_vocab=false)."""
    from ..tokenizers import load_tokenizer, train_tokenizer

    if resume:
        return _run_tokenizers(run_dir)
    tc = cfg.tokenizer
    if tc.path:
        tok = load_tokenizer(tc.path)
        return tok, tok
    kind = tc.kind
    if kind not in ("char", "word", "bpe", "wordpiece"):
        if Path(kind).exists():
            tok = load_tokenizer(kind)
            return tok, tok
        raise ConfigError(f"tokenizer.kind={kind!r} is not char, word, bpe, wordpiece or a path "
                          "to a tokenizer.json")
    t0 = time.perf_counter()

    def fit(texts: list[str]):
        return train_tokenizer(kind, texts, vocab_size=tc.vocab_size, lowercase=tc.lowercase,
                               min_frequency=tc.min_frequency)

    if opts.joint_vocab:
        tok = fit(train.sources + train.targets)
        log(f"trained a joint {kind} tokenizer on the {train.name} split: {tok.vocab_size} tokens "
            f"in {time.perf_counter() - t0:.1f}s")
        return tok, tok
    src_tok, tgt_tok = fit(train.sources), fit(train.targets)
    log(f"trained {kind} tokenizers on the {train.name} split: source {src_tok.vocab_size}, "
        f"target {tgt_tok.vocab_size} tokens in {time.perf_counter() - t0:.1f}s")
    return src_tok, tgt_tok


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


# --------------------------------------------------------------------------- fine-tuning


def _read_splits(cfg: Config, opts: TaskOptions, log: Callable) -> tuple[ParallelSplit, ParallelSplit]:
    path = cfg.data.path
    if not path:
        raise ConfigError("no data: pass --data PATH (a folder of train.SRC/train.TGT or "
                          "train.jsonl files, or one .jsonl file)")
    train = read_split(path, opts.train_split, opts.src or None, opts.tgt or None,
                       opts.source_field, opts.target_field, cfg.data.errors)
    if Path(path).is_file() or opts.val_split not in list_splits(path, opts.src, opts.tgt):
        train, val = split_off(train, cfg.data.val_fraction, cfg.train.seed)
        log(f"no {opts.val_split!r} split in {path}: held out {len(val)} training pairs for validation")
    else:
        val = read_split(path, opts.val_split, opts.src or None, opts.tgt or None,
                         opts.source_field, opts.target_field, cfg.data.errors)
    for split in (train, val):
        if split.skipped_empty:
            log(f"{split.name}: skipped {split.skipped_empty} pairs with an empty source or target "
                f"({split.origin})")
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"{path}: no non-empty pairs in the {'train' if not len(train) else 'val'} split")
    return train, val


def _apply_decoder_init(cfg: Config, opts: TaskOptions, log: Callable) -> tuple[Any, dict]:
    """Match the model to a pretrained GPT run and return (its tokenizer, its weights)."""
    from safetensors.torch import load_file

    from ..tokenizers import load_tokenizer

    run = Path(opts.decoder_init)
    gpt = read_model_config(run)
    if gpt.arch != "gpt" or gpt.head != "causal_lm":
        raise ConfigError(f"--decoder-init {run}: needs a GPT language-model run, got "
                          f"arch={gpt.arch!r} head={gpt.head!r}")
    if cfg.model.arch != "transformer":
        raise ConfigError("--decoder-init needs model.arch=transformer")
    m = cfg.model
    m.d_model, m.n_heads, m.d_ff, m.activation = gpt.d_model, gpt.n_heads, gpt.d_ff, gpt.activation
    m.bias, m.positional, m.norm_eps = gpt.bias, gpt.positional, gpt.norm_eps
    m.extra["dec_layers"] = gpt.n_layers
    opts.joint_vocab = True
    weights = run / BEST_WEIGHTS if (run / BEST_WEIGHTS).is_file() else run / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"--decoder-init {run}: no weights there")
    log(f"decoder starts from {run} ({gpt.n_layers} blocks, d_model {gpt.d_model}); its tokenizer "
        "is the joint vocabulary")
    return load_tokenizer(run / TOKENIZER), load_file(str(weights))


def finetune(task: str = "translate", data: str | Path = "", src: str = "", tgt: str = "",
             config: str | Path | Config | None = None, out: str | Path | None = None,
             overrides: Sequence[str] = (), resume: bool = False,
             decoder_init: str | Path | None = None, log: Callable[[str], Any] = print) -> Path:
    """Train an encoder–decoder on parallel data through the one Trainer; returns the run dir."""
    from ..pretrain import resume_config
    from ..train import distributed

    extra_overrides = list(overrides)
    if data:
        extra_overrides.append(f"data.path={data}")
    if src:
        extra_overrides.append(f"task.src={src}")
    if tgt:
        extra_overrides.append(f"task.tgt={tgt}")
    if task:
        extra_overrides.append(f"task.kind={task}")
    if decoder_init:
        extra_overrides.append(f"task.decoder_init={decoder_init}")
    if resume:
        if out is None:
            raise ConfigError("resume needs the run directory (--resume RUN)")
        cfg = resume_config(out, extra_overrides)
    else:
        if out is not None:
            extra_overrides.append(f"out={out}")
        if isinstance(config, Config):
            cfg = config_from_dict(apply_overrides(config.to_dict(), extra_overrides))
        elif config is None:  # no recipe: a small BPE Transformer
            cfg = load_config(None, DEFAULTS + extra_overrides)
        else:
            cfg = load_config(config, extra_overrides)
    if cfg.model.head != "seq2seq":
        if cfg.model.head == "extractive":
            from .extractive import finetune as extractive_finetune

            return extractive_finetune(cfg, resume=resume, log=log)
        raise ConfigError(f"model.head={cfg.model.head!r}: seq2seq fine-tuning needs model.head=seq2seq")
    opts = TaskOptions.from_config(cfg)
    cfg.task = dataclasses.asdict(opts)
    run_dir = Path(cfg.out)
    if not resume and (run_dir / TRAINER_STATE).exists():
        raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} "
                          "or choose another --out")
    tcfg = cfg.train
    info = distributed.setup(tcfg.device)
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    device = distributed.device_for(info, pick_device(tcfg.device))

    train_split, val_split = _read_splits(cfg, opts, log)
    gpt_state = None
    if opts.decoder_init and not resume:
        src_tok, gpt_state = _apply_decoder_init(cfg, opts, log)
        tgt_tok = src_tok
    else:
        src_tok, tgt_tok = prepare_tokenizers(cfg, opts, train_split, run_dir, resume, log)
    max_src, max_tgt = opts.limits(cfg)
    cfg.model.vocab_size = tgt_tok.vocab_size
    cfg.model.extra["src_vocab_size"] = 0 if src_tok is tgt_tok else src_tok.vocab_size
    cfg.model.extra["max_src_len"] = max_src
    cfg.model.max_len = max(cfg.model.max_len, max_tgt)
    if tgt_tok.pad_id is None:
        raise ConfigError("the tokenizer has no <pad> token")
    cfg.model.pad_id = tgt_tok.pad_id
    train = encode_pairs(train_split, src_tok, tgt_tok, max_src, max_tgt)
    val = encode_pairs(val_split, src_tok, tgt_tok, max_src, max_tgt)
    for name, pairs in (("train", train), ("val", val)):
        if pairs.truncated_src or pairs.truncated_tgt:
            log(f"{name}: truncated {pairs.truncated_src} sources to {max_src} tokens and "
                f"{pairs.truncated_tgt} targets to {max_tgt} tokens (task.max_src_len / max_tgt_len)")

    torch.manual_seed(tcfg.seed)
    model = build_model(cfg.model)
    if gpt_state is not None:
        from ..models.seq2seq import load_gpt_decoder

        loaded = load_gpt_decoder(model, gpt_state)
        log(f"--decoder-init: loaded {len(loaded)} tensors into the decoder")
    model.to(device)
    if info.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG)
        atomic_write_text(run_dir / MODEL_CONFIG, cfg.model.to_json())
        if not resume:
            tgt_tok.save(run_dir / TOKENIZER)
            if src_tok is not tgt_tok:
                src_tok.save(run_dir / SOURCE_TOKENIZER)
    log(f"{cfg.model.arch} seq2seq ({opts.kind}): {count_parameters(model) / 1e6:.2f}M parameters | "
        f"vocab {tgt_tok.vocab_size}{'' if src_tok is tgt_tok else f' / source {src_tok.vocab_size}'} | "
        f"train {len(train):,} pairs ({train.stats['tgt_tokens']:,} target tokens) | val {len(val):,} "
        f"| device {device}")
    task = Seq2SeqTask(model, train, val, val_split, tgt_tok, opts, tcfg.batch_size, tgt_tok.pad_id,
                       seed=tcfg.seed, eval_batches=tcfg.eval_batches, device=device,
                       rank=info.rank, world_size=info.world_size)
    log(f"{len(task.train)} batches per epoch")
    trainer = Trainer(task, tcfg, run_dir, resume=resume, log=log if info.rank == 0 else (lambda *a: None))
    metrics = trainer.fit()
    if metrics and info.rank == 0:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        log(f"done: step {trainer.step} (epoch {task.train.epoch + 1}), {shown}, "
            f"{trainer.elapsed:.0f}s of training -> {run_dir}")
    return run_dir


def finetune_cli(argv: list[str]) -> int:
    """lmforge finetune seq2seq --task translate|summarize --data PATH [--src L --tgt L] ..."""
    parser = argparse.ArgumentParser(
        prog="lmforge finetune seq2seq",
        description="Train an encoder-decoder (Transformer or recurrent with attention) for "
                    "translation or summarization. Trailing key=value pairs override the config.")
    parser.add_argument("--task", choices=KINDS, default=None, help="translate (BLEU) or summarize (ROUGE)")
    parser.add_argument("--data", help="folder of SPLIT.SRC/SPLIT.TGT or SPLIT.jsonl files, or a .jsonl")
    parser.add_argument("--src", help="source language suffix (train.de -> de)")
    parser.add_argument("--tgt", help="target language suffix")
    parser.add_argument("--config", help="YAML recipe (configs/translate-*.yaml, summarize-*.yaml)")
    parser.add_argument("--out", help="run directory to create")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    parser.add_argument("--decoder-init", metavar="RUN", help="start the decoder from a GPT run")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    finetune(task=args.task or "", data=args.data or "", src=args.src or "", tgt=args.tgt or "",
             config=args.config, out=args.resume or args.out, overrides=args.overrides,
             resume=bool(args.resume), decoder_init=args.decoder_init)
    return 0


# --------------------------------------------------------------------------- a trained run


class Seq2SeqRun:
    """A trained seq2seq run: model, tokenizers and task options, ready to decode."""

    def __init__(self, path: Path, model: nn.Module, src_tokenizer: Any, tokenizer: Any,
                 opts: TaskOptions) -> None:
        self.path, self.model, self.opts = path, model, opts
        self.src_tokenizer, self.tokenizer = src_tokenizer, tokenizer
        self.config = model.config

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        return next(self.model.parameters()).device

    def generate(self, texts: str | Sequence[str], beams: int | None = None,
                 length_penalty: float | None = None, max_len_a: float | None = None,
                 max_len_b: int | None = None, batch_size: int = 64,
                 no_repeat_ngram: int | None = None) -> str | list[str]:
        """Translate / summarize one text or a list; beam search with the run's defaults."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        max_src = self.config.extra.get("max_src_len", 0) or self.config.max_len
        ids, _ = encode_sources([t.strip() for t in items], self.src_tokenizer, max_src)
        o = self.opts
        out = decode_ids(self.model, ids, self.tokenizer.bos_id, self.tokenizer.eos_id,
                         self.config.pad_id, beams or o.beams,
                         o.length_penalty if length_penalty is None else length_penalty,
                         o.max_len_a if max_len_a is None else max_len_a,
                         o.max_len_b if max_len_b is None else max_len_b, batch_size,
                         o.no_repeat_ngram if no_repeat_ngram is None else no_repeat_ngram)
        decoded = [self.tokenizer.decode(h).strip() for h in out]
        return decoded[0] if single else decoded


def load_seq2seq(path: str | Path, device: str = "auto", weights: str = "best") -> Seq2SeqRun:
    """Reload a seq2seq run directory (best.safetensors when present, else model.safetensors)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"run folder {str(path)!r} does not exist")
    model_config = read_model_config(path)
    if model_config.head != "seq2seq":
        raise ConfigError(f"{path}: model.head={model_config.head!r} is not a seq2seq run")
    cfg = read_run_config(path) if (path / CONFIG).is_file() else Config()
    opts = TaskOptions.from_config(cfg) if cfg.task else TaskOptions()
    src_tok, tgt_tok = _run_tokenizers(path)
    model = build_model(model_config)
    weights_path = path / BEST_WEIGHTS if weights == "best" and (path / BEST_WEIGHTS).is_file() \
        else path / WEIGHTS
    if not weights_path.is_file():
        raise CheckpointError(f"{path}: no weights ({WEIGHTS}); the run has not saved a checkpoint yet")
    load_weights(model, weights_path)
    model.to(pick_device(device)).eval()
    return Seq2SeqRun(path, model, src_tok, tgt_tok, opts)


def translate(run: Seq2SeqRun | str | Path, texts: str | Sequence[str], beams: int = 5,
              **options: Any) -> str | list[str]:
    """Decode `texts` with a seq2seq run (a loaded run or its directory)."""
    if not isinstance(run, Seq2SeqRun):
        run = load_seq2seq(run)
    return run.generate(texts, beams=beams, **options)


# --------------------------------------------------------------------------- evaluation


def evaluate(run: Seq2SeqRun | str | Path, data: str | Path, split: str = "test",
             beams: int | None = None, limit: int = 0, out_dir: str | Path | None = None,
             batch_size: int = 64, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Decode a split and score it (BLEU/chrF or ROUGE-1/2/L, max over references).

    Writes `<out_dir>/<split>.jsonl` (source, hypothesis, references, per-example scores) and
    `<out_dir>/<split>.scores.json` (default out_dir: RUN/eval); returns the scores.
    """
    if not isinstance(run, Seq2SeqRun):
        run = load_seq2seq(run)
    o = run.opts
    data_split = read_split(data, split, o.src or None, o.tgt or None, o.source_field, o.target_field)
    if data_split.skipped_empty:
        log(f"{split}: skipped {data_split.skipped_empty} pairs with an empty source or target")
    rows = range(len(data_split)) if limit <= 0 else range(min(limit, len(data_split)))
    sources = [data_split.sources[i] for i in rows]
    refs = [data_split.references[i] for i in rows]
    max_src = run.config.extra.get("max_src_len", 0) or run.config.max_len
    _, cut = encode_sources(sources, run.src_tokenizer, max_src)
    if cut:
        log(f"{split}: {cut} sources longer than {max_src} tokens were truncated")
    t0 = time.perf_counter()
    hyps = run.generate(sources, beams=beams, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    scores = score(o.kind, hyps, refs)
    result: dict[str, Any] = {"split": split, "examples": len(hyps), "beams": beams or o.beams,
                              **scores, "decode_seconds": round(seconds, 2),
                              "truncated_sources": cut, "skipped_empty": data_split.skipped_empty}
    if o.kind == "summarize":  # also against the first reference only (the usual single-ref number)
        first = score(o.kind, hyps, [[r[0]] for r in refs])
        result.update({f"{k}_first_ref": v for k, v in first.items()})
    out_dir = Path(out_dir) if out_dir else run.path / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as fh:
        for src_text, hyp, ref in zip(sources, hyps, refs):
            fh.write(json.dumps({"source": src_text, "hypothesis": hyp, "references": ref,
                                 **_example_scores(o.kind, hyp, ref)}, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / f"{split}.scores.json", json.dumps(result, indent=2))
    result["outputs"] = str(out_dir / f"{split}.jsonl")
    return result


def _example_scores(kind: str, hyp: str, refs: list[str]) -> dict[str, float]:
    if kind == "translate":
        import sacrebleu

        return {"bleu": round(sacrebleu.sentence_bleu(hyp, refs).score, 2),
                "chrf": round(sacrebleu.sentence_chrf(hyp, refs).score, 2)}
    return {k: round(v, 2) for k, v in rouge([hyp], [refs]).items()}


def evaluate_cli(argv: list[str]) -> int:
    """lmforge evaluate RUN --data PATH --split NAME [--beams N] [--limit N] [--out DIR]"""
    parser = argparse.ArgumentParser(prog="lmforge evaluate",
                                     description="Decode a split with a seq2seq run and score it.")
    parser.add_argument("run", help="run directory")
    parser.add_argument("--data", required=True, help="the data folder or .jsonl file")
    parser.add_argument("--split", default="test", help="split name (test_2016_flickr, val, ...)")
    parser.add_argument("--beams", type=int, default=None, help="beam size (default: the run's)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N examples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", help="folder for outputs (default RUN/eval)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    run = load_seq2seq(args.run, device=args.device)
    result = evaluate(run, args.data, args.split, args.beams, args.limit, args.out, args.batch_size)
    names = ("bleu", "chrf") if run.opts.kind == "translate" else ("rouge1", "rouge2", "rougeL")
    label = {"bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
    shown = "  ".join(f"{label[k]} {result[k]:.2f}" for k in names)
    print(f"{args.split}: {result['examples']} examples, beam {result['beams']}: {shown}")
    if run.opts.kind == "summarize":
        first = "  ".join(f"{label[k]} {result[k + '_first_ref']:.2f}" for k in names)
        print(f"  against the first reference only: {first}")
    print(f"outputs: {result['outputs']}")
    return 0
