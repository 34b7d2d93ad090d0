"""A trained extractive summarizer: load, summarize, `lmforge evaluate` (ROUGE)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import ConfigError
from ..data.parallel import ParallelSplit, read_split
from ..eval.metrics import rouge
from ..models.extractive import SentenceScorer, build_extractive
from ..run import TOKENIZER, read_model_config, read_run_config, weights_path
from ..outputs import eval_stem
from ..train.checkpoint import atomic_write_text, load_weights
from ..train.runtime import pick_device
from .extractive_task import (
    ExtractiveOptions,
    collate_documents,
    prepare_documents,
    select,
)

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
    load_weights(model, weights_path(path))
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
    stem = eval_stem(data, split)  # the data set's name too: two `test` splits never collide
    with open(out_dir / f"{stem}.jsonl", "w", encoding="utf-8") as fh:
        for s, h, r in zip(sources, hyps, refs):
            per = {k: round(v, 2) for k, v in rouge([h], [r]).items()}
            fh.write(json.dumps({"source": s, "hypothesis": h, "references": r, **per},
                                ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / f"{stem}.scores.json", json.dumps(result, indent=2))
    result["outputs"] = str(out_dir / f"{stem}.jsonl")
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

