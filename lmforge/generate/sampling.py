"""From next-token logits to a token: the decoding options, logits filters and the sampler.

Order of operations for one step (the order Hugging Face's logits processors use):

    logits -> repetition penalty -> / temperature -> top-k -> top-p -> min-p -> softmax -> draw

Temperature 0 (or top-k 1) is greedy decoding: the arg-max, no randomness. Draws use an
inverse-CDF lookup with uniforms from per-row random streams (`RowRandom`), so a row's sample
depends only on its own seed, never on which other rows share its batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class DecodeOptions:
    """Every decoding knob, with the meaning of its default (see docs/decoding.md)."""

    max_new_tokens: int = 200
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off; keep the k most likely tokens
    top_p: float = 1.0  # 1 = off; keep the smallest set holding this much probability
    min_p: float = 0.0  # 0 = off; drop tokens less likely than min_p * p(most likely)
    repetition_penalty: float = 1.0  # 1 = off; > 1 discourages tokens already in the text
    num_beams: int = 1  # > 1 = beam search (deterministic; ignores the sampling knobs)
    length_penalty: float = 1.0  # beams rank by logprob / length ** length_penalty
    early_stopping: bool = True  # beams: stop once num_beams hypotheses have ended
    num_samples: int = 1  # samples (or best beams) returned per prompt
    seed: int | None = None  # None = fresh randomness; sample j of a prompt uses seed + j
    stop: list[str] = field(default_factory=list)  # stop strings (the text ends before them)
    use_cache: bool = True  # False = recompute the whole prefix each step (reference, slow)
    compile: bool = False  # CPU: one-row steps' matrix-vector products compiled (nn/matvec.py)

    @classmethod
    def from_kwargs(cls, **kwargs) -> "DecodeOptions":
        """Build from keyword arguments; an unknown name is a one-line ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown generation option {unknown[0]!r}; valid: "
                             f"{', '.join(sorted(names))}")
        options = cls(**{k: v for k, v in kwargs.items() if v is not None or k == "seed"})
        options.stop = [s for s in (options.stop or []) if s]
        options.validate()
        return options

    def validate(self) -> None:
        """Raise a one-line ValueError naming the first option out of range."""
        check_sampling_args(self.temperature, self.top_k, self.top_p, self.max_new_tokens,
                            self.min_p, self.repetition_penalty)
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.num_beams > 1 and self.num_samples > self.num_beams:
            raise ValueError(f"num_samples={self.num_samples} cannot exceed num_beams="
                             f"{self.num_beams} (beam search returns its best beams)")
        if self.num_beams > 1 and self.sampling:
            raise ValueError("beam search is deterministic: leave temperature, top_k, top_p, "
                             "min_p and repetition_penalty at their defaults with num_beams > 1")

    @property
    def sampling(self) -> bool:
        """True when some sampling knob differs from plain temperature-1 sampling."""
        return (self.temperature != 1.0 or self.top_k != 0 or self.top_p != 1.0
                or self.min_p != 0.0 or self.repetition_penalty != 1.0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 logits upcast to float32 (softmax and sums need it); float64 kept."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_sampling_args(temperature: float, top_k: int, top_p: float, max_new_tokens: int,
                        min_p: float = 0.0, repetition_penalty: float = 1.0) -> None:
    """Raise a one-line ValueError for sampling settings out of range."""
    if not 0 <= temperature < float("inf"):  # also catches NaN
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not 0.0 <= min_p < 1.0:
        raise ValueError(f"min_p must be in [0, 1), got {min_p}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def check_token_budget(rows: int, prompt_len: int, max_new_tokens: int) -> None:
    """Refuse a length whose token buffers (int64 history, ids and their Python lists: about
    64 bytes per token and row) would not fit in the free memory, before allocating them."""
    import os

    need = 64 * rows * (prompt_len + max_new_tokens)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no check
        return
    if need > free // 2:
        cap = max(free // 2 // (64 * rows) - prompt_len, 0)
        raise ValueError(f"max_new_tokens={max_new_tokens} for {rows} row(s) needs about "
                         f"{need / 2**30:.1f} GiB of token buffers, more than half of the "
                         f"{free / 2**30:.1f} GiB free; ask for at most {cap} new tokens")


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): for tokens already seen, divide a positive logit by
    `penalty` and multiply a negative one by it. logits (B, V), seen (B, V) bool.

    >>> apply_repetition_penalty(torch.tensor([[2.0, -2.0, 2.0]]), torch.tensor([[1, 1, 0]]).bool(), 2.0)
    tensor([[ 1., -4.,  2.]])
    """
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0,
                  min_p: float = 0.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) / min-p set to -inf. logits: (B, V).

    The most likely token always survives, so every row keeps at least one candidate.
    """
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    if min_p > 0.0:
        # Nguyen et al. 2024: the threshold scales with the top token's probability
        probs = F.softmax(logits, dim=-1)  # (B, V)
        threshold = min_p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


class RowRandom:
    """One seeded random stream per batch row, read one uniform per row per step.

    Uniforms are drawn in blocks (one call per row every `block` steps), so sampling costs
    no per-row Python work on most steps.
    """

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu", block: int = 64) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.device, self.block = torch.device(device), block
        self.buffer = torch.empty(len(seeds), block, device=device)
        self.pos = block  # empty: refill on first use

    @classmethod
    def fresh(cls, rows: int, device: torch.device | str = "cpu") -> "RowRandom":
        """Unseeded streams (non-deterministic), without touching torch's global RNG."""
        base = torch.Generator().seed() % (1 << 62)
        return cls([base + i for i in range(rows)], device)

    def uniform(self) -> torch.Tensor:
        """Next uniform in [0, 1) of every row: (B,)."""
        if self.pos == self.block:
            for row, gen in enumerate(self.generators):
                self.buffer[row] = torch.rand(self.block, generator=gen, device=self.device)
            self.pos = 0
        self.pos += 1
        return self.buffer[:, self.pos - 1]


def draw(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the token whose cumulative-probability interval holds each row's
    uniform. probs (B, V), uniform (B,) in [0, 1) -> ids (B,).

    >>> draw(torch.tensor([[0.5, 0.0, 0.5]]), torch.tensor([0.6]))
    tensor([2])
    """
    cdf = probs.cumsum(dim=-1)  # (B, V)
    target = (uniform.to(cdf.dtype) * cdf[:, -1])[:, None]  # (B, 1): rescaled against rounding
    # right=True: the first token whose cdf exceeds the target, so zero-probability tokens
    # (an empty interval) are never picked
    ids = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # (B,)
    return ids.clamp_(max=probs.size(-1) - 1)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | RowRandom | None = None,
                min_p: float = 0.0) -> torch.Tensor:
    """Pick the next token for each row. logits: (B, V) -> (B,). temperature 0 = greedy.

    `generator`: a torch.Generator (one stream for the batch), a `RowRandom` (one per row), or
    None (a fresh non-deterministic stream).
    """
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    logits = filter_logits(full_precision(logits) / temperature, top_k, top_p, min_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if isinstance(generator, RowRandom):
        uniform = generator.uniform()
    else:
        if generator is None:
            generator = torch.Generator(device=logits.device)
            generator.seed()
        uniform = torch.rand(logits.size(0), generator=generator, device=logits.device)
    return draw(probs, uniform)
