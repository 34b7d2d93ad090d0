"""Decoding speed: the KV cache against recomputing the prefix every token, in the same run.

The model is nanoGPT's CPU recipe (4 layers, 4 heads, d_model 128, vocab 65, no biases), with
random weights (speed does not depend on them), at context 64 and 256. For each batch size it
times 500 new tokens (temperature 0.8 sampling, as nanoGPT's sample.py) three ways:

    cache      lmforge: one prefill, then one token per step through the preallocated KV
               cache (the window slides past the context: a refill every context/2 tokens)
    recompute  lmforge with use_cache=False: the whole prefix, cropped to the context, per token
    nanoGPT    nanoGPT's sample.py loop written out over the same model (crop, forward, take
               the last logits, softmax, multinomial, concatenate)

and prints tokens/s (batch x new tokens / seconds) with the cache's speed-up.

    python benchmarks/generate_speed.py                      # contexts 64 and 256, batch 1 and 8
    python benchmarks/generate_speed.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmforge.config import ModelConfig  # noqa: E402
from lmforge.generate import DecodeOptions, generate_tokens  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402


def nanogpt_model(context: int) -> torch.nn.Module:
    """nanoGPT's shakespeare_char CPU recipe, as an lmforge GPT."""
    cfg = ModelConfig(arch="gpt", vocab_size=65, d_model=128, n_layers=4, n_heads=4,
                      max_len=context, dropout=0.0, bias=False)
    torch.manual_seed(0)
    return build_model(cfg).eval()


@torch.inference_mode()
def nanogpt_sample(model: torch.nn.Module, batch: int, new_tokens: int, context: int,
                   temperature: float = 0.8) -> torch.Tensor:
    """nanoGPT's `generate`: crop to the context, full forward, sample, append."""
    idx = torch.zeros(batch, 1, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    for _ in range(new_tokens):
        logits, _ = model(idx[:, -context:])
        probs = F.softmax(logits[:, -1] / temperature, dim=-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=gen)], dim=1)
    return idx


def time_one(mode: str, model: torch.nn.Module, batch: int, new_tokens: int, context: int) -> float:
    """Seconds for `batch` x `new_tokens` tokens."""
    t0 = time.perf_counter()
    if mode == "nanoGPT":
        nanogpt_sample(model, batch, new_tokens, context)
    else:
        opts = DecodeOptions(max_new_tokens=new_tokens, temperature=0.8, num_samples=batch,
                             seed=0, use_cache=mode == "cache")
        hyps = generate_tokens(model, [[0]], opts)
        assert all(len(h.tokens) == new_tokens for h in hyps[0])
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--contexts", default="64,256")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per cell (median)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.new_tokens} new tokens, nanoGPT CPU-recipe GPT (4x128, vocab 65), fp32 CPU")
    header = f"{'context':>7} {'batch':>5} {'mode':>9} {'tokens/s':>9} {'ms/step':>8} {'cache speed-up':>14}"
    print(header + "\n" + "-" * len(header))
    for context in map(int, args.contexts.split(",")):
        model = nanogpt_model(context)
        for batch in map(int, args.batches.split(",")):
            time_one("cache", model, batch, 20, context)  # warm-up: allocator, kernels
            rates = {}
            for mode in ("cache", "recompute", "nanoGPT"):
                secs = statistics.median(time_one(mode, model, batch, args.new_tokens, context)
                                         for _ in range(args.repeats))
                rates[mode] = (batch * args.new_tokens / secs, 1000 * secs / args.new_tokens)
            for mode, (rate, ms) in rates.items():
                ratio = "" if mode == "cache" else f"{rates['cache'][0] / rate:.1f}x"
                print(f"{context:>7} {batch:>5} {mode:>9} {rate:>9.0f} {ms:>8.2f} {ratio:>14}")


if __name__ == "__main__":
    main()
