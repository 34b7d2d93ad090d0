"""`lmforge evaluate RUN --data PATH` for language models: loss and perplexity over a corpus.

Unlike the random windows used during training, evaluation covers every token once:
the text is cut into consecutive windows of the model's context length.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ..config import ConfigError
from ..eval.metrics import perplexity


@torch.no_grad()
def evaluate_lm(run, data: str, batch_size: int = 16, max_tokens: int = 0,
                text_field: str = "text", errors: str = "strict") -> dict[str, float]:
    """Mean next-token loss and perplexity of `run` over all tokens of `data`."""
    from ..data.corpus import iter_pieces, resolve_corpus_files

    tok = run.tokenizer
    ids: list[int] = []
    pieces = iter_pieces(resolve_corpus_files(data), text_field=text_field, errors=errors)
    for piece, last_of_document in pieces:
        ids.extend(tok.encode(piece))
        if last_of_document and tok.eos_id is not None:
            ids.append(tok.eos_id)  # documents end with <eos>, as in training
        if max_tokens and len(ids) > max_tokens:
            break
    if max_tokens:
        ids = ids[: max_tokens + 1]
    T = run.model_config.max_len
    if len(ids) < 2:
        raise ConfigError(f"{data}: fewer than two tokens to evaluate")
    tokens = torch.tensor(ids, dtype=torch.long)
    n_windows = math.ceil((len(tokens) - 1) / T)
    model, device = run.model.eval(), run.device
    total, count = 0.0, 0
    for start in range(0, n_windows, batch_size):
        xs, ys = [], []
        for w in range(start, min(start + batch_size, n_windows)):
            x = tokens[w * T: w * T + T]
            y = tokens[w * T + 1: w * T + T + 1]
            y = torch.nn.functional.pad(y, (0, len(x) - len(y)), value=-100)
            pad = T - len(x)  # the last window is shorter: pad, and ignore the padding
            xs.append(torch.nn.functional.pad(x, (0, pad), value=0))
            ys.append(torch.nn.functional.pad(y, (0, pad), value=-100))
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(),
                                                 ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((y != -100).sum())
    loss = total / count
    return {"loss": loss, "ppl": perplexity(loss), "tokens": count}


def evaluate_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge evaluate",
                                     description="Loss and perplexity of a language model on a corpus.")
    parser.add_argument("run")
    parser.add_argument("--data", required=True, help="text file, folder, glob or .jsonl")
    parser.add_argument("--split", help="with a folder: score only its NAME.txt / NAME.jsonl / NAME/")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=0, help="0 = all")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    from ..data.corpus import corpus_split
    from ..run import load_run

    args.data = corpus_split(args.data, args.split)
    run = load_run(args.run, device=args.device)
    result = evaluate_lm(run, args.data, args.batch_size, args.max_tokens, args.text_field)
    print(f"{Path(args.data).name}: {result['tokens']:,} tokens | loss {result['loss']:.4f} | "
          f"perplexity {result['ppl']:.2f}")
    return 0


__all__ = ["evaluate_lm", "evaluate_cli"]
