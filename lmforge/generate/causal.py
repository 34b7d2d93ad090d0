"""Decoding a causal language model (`heads.CausalLM` over any causal backbone), in token ids.

`start_decoding` runs the prompts once (the *prefill*) and returns the first logits, a state
and a step function for the loops in `search.py`. Three ways to continue a sequence:

- **KV cache** (backbones with `init_state`, i.e. the GPT): keys and values of every position
  are kept in a preallocated cache; each step feeds one token. Ragged prompts are left-padded,
  with a key mask over the padding and each row's true positions, so every row computes what
  it would alone. Past `max_len` the window slides: the cache is refilled from each row's last
  `max_len // 2` tokens and decoding continues (the cost of one prefill every max_len / 2
  tokens instead of a full recompute per token).
- **Carried state** (RNN, LSTM, GRU, RCNN: hidden state; CNN, MLP: the window of recent
  inputs; bigram: nothing): ragged prompts are right-padded and the backbone's mask makes the
  state end at each row's last real token. There is no context limit.
- **Recompute** (`use_cache=False`): run the whole prefix, cropped to `max_len`, every step,
  as nanoGPT's sample.py does. The slow reference the tests and the benchmark compare with.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..nn.matvec import matvec_linears
from .sampling import DecodeOptions, RowRandom, check_token_budget, full_precision
from .search import Hypothesis, StepFn, beam_search, sample_loop


def context_limit(model: nn.Module) -> int | None:
    """Longest sequence the model attends over at once (KV-cache models), None when unbounded."""
    return model.config.max_len if model.backbone.kv_cache else None


def check_causal(model: nn.Module) -> None:
    """Refuse models that cannot generate left to right."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(model, "lm_head"):
        hint = ("; encoder-decoder runs decode with lmforge.tasks.seq2seq.load_seq2seq(run)"
                ".generate(texts)" if getattr(getattr(model, "config", None), "head", "") == "seq2seq"
                else "")
        raise ValueError(f"generation needs a causal language model (head causal_lm), got "
                         f"{type(model).__name__}{hint}")
    if not backbone.causal:
        raise ValueError(f"generation needs a causal backbone; {type(backbone).__name__} sees "
                         f"future tokens (bidirectional or non-causal)")


class LMState:
    """Decoding state of a batch of rows: the backbone's own state plus bookkeeping.

    inner     the backbone's state (KV caches, (h, c), conv windows, ...)
    history   (N, capacity) every token so far, prompts left-padded (for the sliding window
              and the recompute path; None when not needed); `count` columns are used
    hist_pad  (N,) left padding of each history row
    mask      (N, cache capacity) True at real cached positions (ragged KV-cache batches)
    pad       (N,) left padding inside the current cache window
    """

    def __init__(self, inner: Any, select_inner: Callable[[Any, torch.Tensor], Any],
                 history: torch.Tensor | None = None, count: int = 0,
                 hist_pad: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                 pad: torch.Tensor | None = None) -> None:
        self.inner, self.select_inner = inner, select_inner
        self.history, self.count, self.hist_pad = history, count, hist_pad
        self.mask, self.pad = mask, pad

    def push(self, ids: torch.Tensor) -> None:
        """Record the tokens just chosen (N, 1)."""
        if self.history is not None:
            self.history[:, self.count] = ids[:, 0]
            self.count += 1

    def rows(self) -> list[list[int]]:
        """Each row's real tokens so far (for a window refill)."""
        hist = self.history[:, :self.count].tolist()
        return [h[p:] for h, p in zip(hist, self.hist_pad.tolist())]

    def select(self, rows: torch.Tensor) -> "LMState":
        """Keep (and repeat) the given rows (beam search)."""
        pick = lambda t: None if t is None else t.index_select(0, rows.to(t.device))  # noqa: E731
        return LMState(self.select_inner(self.inner, rows), self.select_inner, pick(self.history),
                       self.count, pick(self.hist_pad), pick(self.mask), pick(self.pad))


def _select_fn(backbone: nn.Module) -> Callable[[Any, torch.Tensor], Any]:
    # recurrent states keep torch's (layers, B, H) layout: the backbone knows its batch dim
    return backbone.select_state


def _accepts_positions(backbone: nn.Module) -> bool:
    return "positions" in inspect.signature(backbone.forward).parameters


def _history(rows: list[list[int]], extra: int, pad_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token buffer (N, P + extra) with room for `extra` more, and the pads (N,)."""
    P = max(len(r) for r in rows)
    buf = torch.full((len(rows), P + extra), pad_id, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        buf[i, P - len(r):P] = torch.tensor(r, dtype=torch.long, device=device)
    pads = torch.tensor([P - len(r) for r in rows], device=device)
    return buf, pads


# --------------------------------------------------------------------------- KV cache


def _kv_prefill(model: nn.Module, rows: list[list[int]], capacity: int,
                state: LMState) -> tuple[torch.Tensor, LMState]:
    """Left-pad `rows` into a fresh cache of `capacity` positions; logits of the next token."""
    backbone = model.backbone
    device = model.lm_head.weight.device
    ids, pad = _history(rows, 0, model.config.pad_id, device)  # (N, P), (N,)
    P = ids.size(1)
    cache = backbone.init_state(len(rows), max_len=capacity, device=device)
    kwargs: dict[str, Any] = {}
    mask = None
    if bool(pad.any()):
        mask = torch.zeros(len(rows), capacity, dtype=torch.bool, device=device)
        mask[:, :P] = torch.arange(P, device=device)[None] >= pad[:, None]  # (N, P)
        kwargs["mask"] = mask[:, :P]
        if _accepts_positions(backbone):  # each row counts positions from its first real token
            kwargs["positions"] = (torch.arange(P, device=device)[None] - pad[:, None]).clamp(min=0)
    hidden, cache = backbone(ids, state=cache, **kwargs)  # (N, P, D)
    state.inner, state.mask, state.pad = cache, mask, pad
    return model.lm_head(hidden[:, -1]), state  # left padding: the last column is real


def _kv_decoding(model: nn.Module, rows: list[list[int]], max_new_tokens: int
                 ) -> tuple[torch.Tensor, LMState, StepFn]:
    backbone, limit = model.backbone, model.config.max_len
    device = model.lm_head.weight.device
    rows = [r[-limit:] for r in rows]  # a prompt longer than the context keeps its end
    P = max(len(r) for r in rows)
    # the cache never needs more than prompt + new tokens; past `limit` the window slides
    capacity = min(limit, P + max_new_tokens)
    state = LMState(None, _select_fn(backbone))
    if P + max_new_tokens > limit:  # the window may slide: keep every token for the refill
        state.history, state.hist_pad = _history(rows, max_new_tokens, model.config.pad_id, device)
        state.count = P
    logits, state = _kv_prefill(model, rows, capacity, state)
    keep = max(1, limit // 2)
    positions_ok = _accepts_positions(backbone)

    def step(ids: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        state.push(ids)
        length = state.inner[0].length  # positions cached so far
        if length >= capacity:  # window full: re-encode each row's last `keep` tokens
            return _kv_prefill(model, [r[-keep:] for r in state.rows()], limit, state)
        kwargs: dict[str, Any] = {}
        if state.mask is not None:
            state.mask[:, length] = True
            kwargs["mask"] = state.mask[:, :length + 1]  # (N, length+1): cached keys included
            if positions_ok:
                kwargs["positions"] = (length - state.pad)[:, None]  # (N, 1)
        hidden, _ = backbone(ids, state=state.inner, **kwargs)  # (N, 1, D)
        return model.lm_head(hidden[:, -1]), state

    return logits, state, step


# --------------------------------------------------------------------------- carried state


def _carried_decoding(model: nn.Module, rows: list[list[int]]) -> tuple[torch.Tensor, LMState, StepFn]:
    backbone = model.backbone
    device = model.lm_head.weight.device
    lengths = torch.tensor([len(r) for r in rows], device=device)  # (N,)
    P = int(lengths.max())
    ids = torch.full((len(rows), P), model.config.pad_id, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long, device=device)
    ragged = bool((lengths != P).any())
    mask = torch.arange(P, device=device)[None] < lengths[:, None] if ragged else None  # (N, P)
    hidden, inner = backbone(ids, mask=mask)  # (N, P, D); state at each row's last real token
    last = hidden[torch.arange(len(rows), device=device), lengths - 1]  # (N, D)
    state = LMState(inner, _select_fn(backbone))

    def step(ids: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        hidden, state.inner = backbone(ids, state=state.inner)  # (N, 1, D)
        return model.lm_head(hidden[:, -1]), state

    return model.lm_head(last), state, step


# --------------------------------------------------------------------------- recompute


def _recompute_decoding(model: nn.Module, rows: list[list[int]], max_new_tokens: int
                        ) -> tuple[torch.Tensor, LMState, StepFn]:
    if len({len(r) for r in rows}) > 1:
        raise ValueError("use_cache=False (recompute) needs prompts of equal length")
    limit = context_limit(model)
    device = model.lm_head.weight.device
    history, pad = _history(rows, max_new_tokens, model.config.pad_id, device)
    state = LMState(None, lambda inner, rows: None, history, len(rows[0]), pad)

    def forward_last(state: LMState) -> torch.Tensor:
        start = max(0, state.count - limit) if limit else 0
        hidden, _ = model.backbone(state.history[:, start:state.count])  # (N, T, D)
        return model.lm_head(hidden[:, -1])

    def step(ids: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        state.push(ids)
        return forward_last(state), state

    return forward_last(state), state, step


def start_decoding(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   use_cache: bool = True) -> tuple[torch.Tensor, LMState, StepFn]:
    """Prefill `prompts` (each at least one id); returns (logits (B, V) of the first new
    token, state, step_fn) for `sample_loop` / `beam_search`."""
    check_causal(model)
    rows = [[int(i) for i in p] for p in prompts]
    if not rows or min(len(r) for r in rows) == 0:
        raise ValueError("every prompt must hold at least one token (use the <eos>/<bos> id)")
    check_token_budget(len(rows), max(len(r) for r in rows), max_new_tokens)
    if not use_cache:
        return _recompute_decoding(model, rows, max_new_tokens)
    if model.backbone.kv_cache:
        return _kv_decoding(model, rows, max_new_tokens)
    return _carried_decoding(model, rows)


# --------------------------------------------------------------------------- token-level API


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) inside; the previous mode restored after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _seen_mask(rows: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    seen = torch.zeros(len(rows), vocab, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        seen[i, r] = True
    return seen


@torch.inference_mode()  # as a decorator it is re-entered at each resume, never leaks out
def iter_tokens(model: nn.Module, prompts: Sequence[Sequence[int]], options: DecodeOptions,
                stop_ids: Sequence[int] = (), seeds: Sequence[int] | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sample row by row (greedy when temperature is 0): yields (tokens (B,), logprobs (B,))
    per step, as `sample_loop`. `seeds[i]` seeds row i's random stream (None: fresh)."""
    with _eval_mode(model), matvec_linears(model, options.compile):
        logits, state, step = start_decoding(model, prompts, options.max_new_tokens,
                                             options.use_cache)
        device = logits.device
        generator = None
        if not options.greedy:
            generator = RowRandom(list(seeds), device) if seeds is not None \
                else RowRandom.fresh(len(prompts), device)
        seen = None
        if options.repetition_penalty != 1.0:
            seen = _seen_mask([list(p) for p in prompts], logits.size(-1), device)
        yield from sample_loop(step, logits, state, options.max_new_tokens,
                               temperature=options.temperature, top_k=options.top_k,
                               top_p=options.top_p, min_p=options.min_p,
                               repetition_penalty=options.repetition_penalty, seen=seen,
                               stop_ids=stop_ids, generator=generator)


def sample_seeds(options: DecodeOptions, n_prompts: int) -> list[int] | None:
    """Row seeds for n_prompts x num_samples rows: sample j of every prompt uses seed + j, so a
    prompt's text depends on (prompt, seed, j) only, never on the rest of the batch."""
    if options.seed is None:
        return None
    return [options.seed + j for _ in range(n_prompts) for j in range(options.num_samples)]


def generate_tokens(model: nn.Module, prompts: Sequence[Sequence[int]], options: DecodeOptions,
                    eos_id: int | None = None, stop_ids: Sequence[int] = ()) -> list[list[Hypothesis]]:
    """`options.num_samples` hypotheses per prompt (samples, or the best beams, best first).

    A hypothesis ends at (and includes) `eos_id` or any of `stop_ids`.
    """
    options.validate()
    if options.num_beams > 1:
        with _eval_mode(model), torch.inference_mode(), matvec_linears(model, options.compile):
            logits, state, step = start_decoding(model, prompts, options.max_new_tokens,
                                                 options.use_cache)
            return beam_search(step, logits, state, options.num_beams, options.max_new_tokens,
                               eos_id=eos_id, length_penalty=options.length_penalty,
                               early_stopping=options.early_stopping,
                               num_return=options.num_samples)
    n = options.num_samples
    rows = [p for p in prompts for _ in range(n)]
    stops = set(stop_ids) | ({eos_id} if eos_id is not None else set())
    tokens, logprobs = [], []
    for tok, lp in iter_tokens(model, rows, options, tuple(stops), sample_seeds(options, len(prompts))):
        tokens.append(tok)
        logprobs.append(lp)
    if not tokens:
        return [[Hypothesis([], 0.0, 0.0, False) for _ in range(n)] for _ in prompts]
    all_ids = torch.stack(tokens, 1).tolist()  # (N, T): one transfer at the end
    all_lps = torch.stack(logprobs, 1).tolist()
    out: list[list[Hypothesis]] = []
    for i, (ids, lps) in enumerate(zip(all_ids, all_lps)):
        end = next((t + 1 for t, tok in enumerate(ids) if tok in stops), len(ids))
        lp = float(sum(lps[:end]))
        hyp = Hypothesis(ids[:end], lp, lp, end > 0 and ids[end - 1] in stops)
        if i % n == 0:
            out.append([])
        out[-1].append(hyp)
    return out


def generate_ids(model: nn.Module, prompt: Sequence[int], max_new_tokens: int = 200,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 stop_ids: Sequence[int] = (), seed: int | None = None, **options: Any) -> list[int]:
    """Continue one prompt of token ids; returns the new ids (ending with a stop id, if one
    was produced). Further keyword options: see `DecodeOptions`."""
    opts = DecodeOptions.from_kwargs(max_new_tokens=max_new_tokens, temperature=temperature,
                                     top_k=top_k, top_p=top_p, seed=seed, **options)
    if not prompt:
        raise ValueError("the prompt must hold at least one token (use the <eos>/<bos> id)")
    return generate_tokens(model, [list(prompt)], opts, stop_ids=stop_ids)[0][0].tokens


# --------------------------------------------------------------------------- scoring


def _windowed_logprobs(model: nn.Module, seq: list[int], first: int, limit: int) -> torch.Tensor:
    """Log-probs of seq[first:] for a model that sees at most `limit` tokens: windows of
    `limit` tokens advancing by limit // 2, each target scored with >= limit // 2 of context."""
    device = model.lm_head.weight.device
    stride = max(1, limit // 2)
    out, pos = [], first
    while pos < len(seq):
        end = min(pos + stride, len(seq))
        start = max(0, end - limit)
        ids = torch.tensor([seq[start:end]], device=device)  # (1, W)
        logp = torch.log_softmax(full_precision(model(ids)[0][0]), dim=-1)  # (W, V)
        targets = torch.tensor(seq[pos:end], device=device)
        out.append(logp[pos - 1 - start:end - 1 - start].gather(1, targets[:, None])[:, 0])
        pos = end
    return torch.cat(out)


def token_logprobs(model: nn.Module, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                   batch_size: int = 16) -> list[torch.Tensor]:
    """log p(continuation token | everything before it) for each (prompt, continuation) pair
    of id lists (the prompt non-empty): a list of (len(continuation),) float tensors."""
    check_causal(model)
    limit = context_limit(model)
    device = model.lm_head.weight.device
    results: list[torch.Tensor | None] = [None] * len(pairs)
    short = []
    with _eval_mode(model), torch.inference_mode():
        for i, (prompt, cont) in enumerate(pairs):
            if not prompt:
                raise ValueError("scoring needs a non-empty prompt (use the <eos>/<bos> id)")
            seq = [int(t) for t in prompt] + [int(t) for t in cont]
            if not cont:
                results[i] = torch.zeros(0, device=device)
            elif limit and len(seq) > limit:
                results[i] = _windowed_logprobs(model, seq, len(prompt), limit).cpu()
            else:
                short.append((i, seq, len(prompt)))
        for b in range(0, len(short), batch_size):
            chunk = short[b:b + batch_size]
            T = max(len(seq) for _, seq, _ in chunk)
            # right padding needs no mask in a causal model: pads only follow the real tokens
            ids = torch.full((len(chunk), T), model.config.pad_id, dtype=torch.long, device=device)
            for row, (_, seq, _) in enumerate(chunk):
                ids[row, :len(seq)] = torch.tensor(seq, device=device)
            logp = torch.log_softmax(full_precision(model(ids)[0]), dim=-1)  # (B, T, V)
            for row, (i, seq, first) in enumerate(chunk):
                targets = ids[row, first:len(seq)]  # (C,)
                results[i] = logp[row, first - 1:len(seq) - 1].gather(1, targets[:, None])[:, 0].cpu()
    return results  # type: ignore[return-value]


def score_ids(model: nn.Module, prompt: Sequence[int], continuation: Sequence[int]) -> float:
    """Sum of log-probs of `continuation` given `prompt` (ids)."""
    return float(token_logprobs(model, [(prompt, continuation)])[0].sum())
