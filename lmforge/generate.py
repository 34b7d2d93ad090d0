"""Decoding: turn a causal model's logits back into tokens.

The model is any `CausalLM` (GPT, RNN, LSTM, GRU, CNN, ...). Decoding is incremental: the
prompt is run once, then one token at a time with the backbone's state (the KV cache of a
Transformer, the hidden state of a recurrent net), so the prefix is never recomputed.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn


def check_sampling_args(temperature: float, top_k: int, top_p: float, max_new_tokens: int) -> None:
    """Raise a one-line ValueError for sampling settings out of range."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) set to -inf. logits: (B, V)."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token for each row. logits: (B, V) -> (B,). temperature 0 = greedy."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _fresh_state(model: nn.Module, batch: int, device: torch.device):
    init = getattr(model.backbone, "init_state", None)
    return init(batch, device=device) if init is not None else None


def _context_limit(model: nn.Module) -> int | None:
    """Longest sequence the model can see at once (Transformers), None when unbounded."""
    backbone = model.backbone
    return model.config.max_len if hasattr(backbone, "init_state") else None


@torch.no_grad()
def generate_ids(model: nn.Module, prompt: list[int], max_new_tokens: int = 200,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 stop_ids: tuple[int, ...] = (), seed: int | None = None) -> list[int]:
    """Continue one prompt of token ids; returns the new ids (without the prompt).

    Past the model's context length a Transformer slides its window: the cache is refilled
    from the last `max_len // 2` tokens and decoding continues from there.
    """
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if not prompt:
        raise ValueError("the prompt must hold at least one token (use the <eos>/<bos> id)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    limit = _context_limit(model)
    tokens = list(prompt)
    context = tokens[-limit:] if limit else tokens
    state = _fresh_state(model, 1, device)
    ids = torch.tensor([context], device=device)
    logits, _, state = model(ids, state=state, return_state=True, last_only=True)
    new: list[int] = []
    for _ in range(max_new_tokens):
        next_id = sample_next(logits[:, -1], temperature, top_k, top_p, generator)  # (1,)
        token = int(next_id)
        new.append(token)
        tokens.append(token)
        if token in stop_ids:
            break
        if limit and state[0].length >= limit:  # cache full: slide the window
            state = _fresh_state(model, 1, device)
            ids = torch.tensor([tokens[-(limit // 2):]], device=device)
        else:
            ids = next_id[:, None]
        logits, _, state = model(ids, state=state, return_state=True, last_only=True)
    model.train(was_training)
    return new


def cli(argv: list[str]) -> int:
    """lmforge generate RUN --prompt TEXT [sampling options]"""
    parser = argparse.ArgumentParser(prog="lmforge generate", description="Generate text from a run.")
    parser.add_argument("run", help="run directory")
    parser.add_argument("--prompt", default="", help="text to continue ('' = start a new document)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=[], help="stop at this string")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    from .run import load_run

    run = load_run(args.run, device=args.device)
    text = run.generate(args.prompt, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        seed=args.seed, stop=args.stop)
    print(args.prompt + text)
    return 0
