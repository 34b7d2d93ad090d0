"""A trained seq2seq run: load, translate / summarize, `lmforge evaluate` (BLEU, chrF, ROUGE)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..config import Config, ConfigError
from ..data.parallel import encode_sources, read_split
from ..eval.metrics import rouge
from ..models.build import build_model
from ..run import CONFIG, read_model_config, read_run_config, weights_path
from ..outputs import eval_stem
from ..train.checkpoint import (
    atomic_write_text,
    load_weights,
)
from ..train.runtime import pick_device
from .seq2seq_decode import decode_ids
from .seq2seq_task import TaskOptions, _run_tokenizers, score

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
    load_weights(model, weights_path(path, weights))
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
    stem = eval_stem(data, split)  # the data set's name too: two `test` splits never collide
    with open(out_dir / f"{stem}.jsonl", "w", encoding="utf-8") as fh:
        for src_text, hyp, ref in zip(sources, hyps, refs):
            fh.write(json.dumps({"source": src_text, "hypothesis": hyp, "references": ref,
                                 **_example_scores(o.kind, hyp, ref)}, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / f"{stem}.scores.json", json.dumps(result, indent=2))
    result["outputs"] = str(out_dir / f"{stem}.jsonl")
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

