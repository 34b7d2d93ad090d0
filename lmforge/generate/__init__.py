"""Decoding: turn a model's next-token logits back into text.

Layers, bottom up (each usable on its own; see docs/decoding.md):

    sampling.py  DecodeOptions; logits filters (temperature, top-k, top-p, min-p, repetition
                 penalty) and the seeded per-row sampler
    state.py     reorder_state: keep / repeat the batch rows of any decoding state
    search.py    sample_loop and beam_search over a step function: model-agnostic, reused by
                 encoder-decoder models
    causal.py    causal LMs (GPT, RNN, LSTM, GRU, CNN, RCNN, MLP, bigram) in token ids: prefill,
                 KV cache / carried state, sliding window, ragged batches, scoring
    text.py      prompts and text: stop strings, streaming without split characters, scores
    command.py   `lmforge generate`
"""

from .causal import (LMState, context_limit, generate_ids, generate_tokens, iter_tokens,
                     score_ids, start_decoding, token_logprobs)
from .command import cli
from .sampling import (DecodeOptions, RowRandom, apply_repetition_penalty, check_sampling_args,
                       draw, filter_logits, sample_next)
from .search import Hypothesis, StepFn, beam_search, sample_loop
from .state import reorder_state
from .text import (Generation, TextStream, complete, encode_prompt, score_texts, start_id,
                   stream_text)

__all__ = [
    "DecodeOptions", "Generation", "Hypothesis", "LMState", "RowRandom", "StepFn", "TextStream",
    "apply_repetition_penalty", "beam_search", "check_sampling_args", "cli", "complete",
    "context_limit", "draw", "encode_prompt", "filter_logits", "generate_ids",
    "generate_tokens", "iter_tokens", "reorder_state", "sample_loop", "sample_next",
    "score_ids", "score_texts", "start_decoding", "start_id", "stream_text", "token_logprobs",
]
