"""Text in, text out: prompts are encoded, ids are decoded, stop strings and streaming handled.

    gens = complete(model, tokenizer, ["To be", "or not"], DecodeOptions(max_new_tokens=50))
    for piece in stream_text(model, tokenizer, "ROMEO:", DecodeOptions(top_k=40)):
        print(piece, end="", flush=True)

An empty prompt starts a new document. lmforge corpora end every document with <eos>, so an
lmforge-trained model has seen <eos> as "a document starts next" and never seen <bos>: we start
from <eos>. Imported tokenizers (kind "hf", e.g. GPT-2's, whose <|endoftext|> is both) start
from their <bos>, falling back to <eos>.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from torch import nn

from .causal import generate_tokens, iter_tokens, sample_seeds, token_logprobs
from .sampling import DecodeOptions

REPLACEMENT = "\ufffd"  # what a decoder shows for an incomplete UTF-8 byte sequence


def start_id(tokenizer: Any) -> int:
    """The id an empty prompt starts from (see the module docstring)."""
    order = ("bos_id", "eos_id") if getattr(tokenizer, "kind", "") == "hf" else ("eos_id", "bos_id")
    for name in order:
        i = getattr(tokenizer, name, None)
        if i is not None:
            return int(i)
    raise ValueError("an empty prompt needs a tokenizer with an <eos> or <bos> token")


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt; an empty one becomes [start_id]. An imported tokenizer whose
    model starts every text with BOS (`options["add_bos"]`, as transformers' tokenizer(text)
    does for Llama) gets it here too."""
    if not isinstance(prompt, str):
        raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}")
    ids = tokenizer.encode(prompt) if prompt else []
    bos = getattr(tokenizer, "bos_id", None)
    if getattr(tokenizer, "options", {}).get("add_bos") and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids or [start_id(tokenizer)]


@dataclass
class Generation:
    """One generated continuation."""

    text: str  # the new text (without the prompt), cut before any stop string
    ids: list[int]  # the new token ids, up to the token that ended generation
    logprob: float  # sum of the model's log-probabilities of `ids`
    score: float  # beam search's ranking score (logprob / len ** length_penalty); = logprob when sampling
    finish_reason: str  # "eos" | "stop" (a stop string) | "length" (max_new_tokens)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that could begin a stop string (not yet safe to show).

    >>> _held_back("to be\\n", ["\\n\\n"])
    1
    """
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


class TextStream:
    """Turn token ids, pushed one at a time, into text pieces that are safe to show.

    A piece never splits a multi-byte character: the text of all ids is decoded again and only
    its new suffix is emitted, once it no longer ends in U+FFFD (the bytes of a character may
    arrive in several byte-level tokens). Text that might be the start of a stop string is
    held back until it is clearly not one. The pieces concatenate to `text`.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = 0  # characters of text already handed out
        self.full = ""
        self.stopped = False

    @property
    def text(self) -> str:
        """The text so far (cut before a stop string once one appeared)."""
        return self.full

    def push(self, token: int) -> str:
        """Add one id; return the newly safe text ('' when nothing is safe yet)."""
        if self.stopped:
            return ""
        self.ids.append(int(token))
        self.full = self.tokenizer.decode(self.ids)
        if self.stop:
            # a stop string can only start in text not yet emitted (held back until now)
            window = self.full[max(0, self.emitted - max(map(len, self.stop))):]
            hits = [window.find(s) for s in self.stop]
            hits = [h for h in hits if h >= 0]
            if hits:
                self.full = self.full[:len(self.full) - len(window) + min(hits)]
                self.stopped = True
                return self.flush()
        if self.full.endswith(REPLACEMENT):
            return ""
        safe = len(self.full) - _held_back(self.full, self.stop)
        if safe <= self.emitted:
            return ""
        piece, self.emitted = self.full[self.emitted:safe], safe
        return piece

    def flush(self) -> str:
        """Everything not yet emitted (at the end of generation)."""
        piece, self.emitted = self.full[self.emitted:], len(self.full)
        return piece


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stop if s]
    hits = [h for h in hits if h >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def complete(model: nn.Module, tokenizer: Any, prompts: Sequence[str],
             options: DecodeOptions) -> list[list[Generation]]:
    """`options.num_samples` generations for each prompt (a batch of ragged prompts)."""
    options.validate()
    rows = [encode_prompt(tokenizer, p) for p in prompts]
    eos = tokenizer.eos_id
    if options.num_beams > 1 or not options.stop:
        out = []
        for hyps in generate_tokens(model, rows, options, eos_id=eos):
            gens = []
            for h in hyps:
                text, stopped = _cut_at_stop(tokenizer.decode(h.tokens), options.stop)
                reason = "stop" if stopped else "eos" if h.finished else "length"
                gens.append(Generation(text, h.tokens, h.logprob, h.score, reason))
            out.append(gens)
        return out
    # stop strings: watch the text as it grows and end each row at its first stop string
    n = options.num_samples
    expanded = [r for r in rows for _ in range(n)]
    streams = [TextStream(tokenizer, options.stop) for _ in expanded]
    logprobs = [0.0] * len(expanded)
    reasons = ["length"] * len(expanded)
    live = set(range(len(expanded)))
    for tok, lp in iter_tokens(model, expanded, options, (eos,) if eos is not None else (),
                               sample_seeds(options, len(rows))):
        for i, (t, p) in enumerate(zip(tok.tolist(), lp.tolist())):
            if i not in live:
                continue
            streams[i].push(t)
            logprobs[i] += p
            if t == eos or streams[i].stopped:
                reasons[i] = "eos" if t == eos else "stop"
                live.discard(i)
        if not live:
            break
    gens = [Generation(s.text, s.ids, lp, lp, r) for s, lp, r in zip(streams, logprobs, reasons)]
    return [gens[i:i + n] for i in range(0, len(gens), n)]


def stream_text(model: nn.Module, tokenizer: Any, prompt: str, options: DecodeOptions) -> Iterator[str]:
    """Yield the new text of one prompt piece by piece as it is generated.

    Beam search only knows its answer at the end: it is yielded as one piece.
    """
    options.validate()
    if options.num_samples != 1:
        raise ValueError(f"streaming makes one sample at a time, got num_samples={options.num_samples}")
    if options.num_beams > 1:
        yield complete(model, tokenizer, [prompt], options)[0][0].text
        return
    eos = tokenizer.eos_id
    yield from stream_pieces(model, encode_prompt(tokenizer, prompt), options,
                             (eos,) if eos is not None else (), TextStream(tokenizer, options.stop))


def stream_pieces(model: nn.Module, ids: list[int], options: DecodeOptions, stop_ids: tuple[int, ...],
                  stream: TextStream) -> Iterator[str]:
    """Sample after the prompt `ids` and yield the text through `stream` piece by piece, until
    a token of `stop_ids` (not shown), a stop string of `stream` or max_new_tokens."""
    for tok, _ in iter_tokens(model, [ids], options, stop_ids, sample_seeds(options, 1)):
        t = int(tok[0])
        if t in stop_ids:
            break
        piece = stream.push(t)
        if piece:
            yield piece
        if stream.stopped:
            return
    piece = stream.flush()
    if piece:
        yield piece


def score_texts(model: nn.Module, tokenizer: Any, prompts: Sequence[str],
                continuations: Sequence[str]) -> list[float]:
    """log p(continuation | prompt), summed over the continuation's tokens, for each pair.

    The continuation is tokenized on its own (a leading space belongs to it), as in
    lm-evaluation-harness; an empty prompt conditions on the document start.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    pairs = [(encode_prompt(tokenizer, p), tokenizer.encode(c) if c else [])
             for p, c in zip(prompts, continuations)]
    return [float(lp.sum()) for lp in token_logprobs(model, pairs)]
