"""Chatting with a causal language model: prompts from the chat template, replies that end
at the template's end-of-turn token, and a multi-turn session that fits the context.

    session = ChatSession(run.model, run.tokenizer, ChatTemplate.from_run(run.path),
                          system="You are terse.", options=DecodeOptions(temperature=0))
    for piece in session.send("What is the capital of France?"):
        print(piece, end="", flush=True)

The rendered prompt is tokenized as transformers' `apply_chat_template(tokenize=True)` does:
without adding special tokens (the template writes BOS itself where the model wants one).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

from torch import nn

from ..config import ConfigError
from ..generate.causal import context_limit, generate_tokens
from ..generate.sampling import DecodeOptions
from ..generate.text import TextStream, stream_pieces
from .template import ChatTemplate

Messages = Sequence[Mapping[str, Any]]


class ChatError(ConfigError):
    """A chat turn that cannot be answered (e.g. longer than the model's context)."""


def encode_chat(tokenizer: Any, template: ChatTemplate, messages: Messages) -> list[int]:
    """Token ids of the prompt for the next assistant turn."""
    return tokenizer.encode(template.render(messages, add_generation_prompt=True))


def end_of_turn_ids(tokenizer: Any, template: ChatTemplate) -> list[int]:
    """Ids that end a reply: the template's stop strings that are single tokens, and EOS."""
    ids = [tokenizer.token_to_id(s) for s in template.stop_strings]
    ids.append(tokenizer.eos_id)
    return list(dict.fromkeys(i for i in ids if i is not None))


def _text_stops(tokenizer: Any, template: ChatTemplate, options: DecodeOptions) -> list[str]:
    # stop strings that are not one token are watched in the text
    return [s for s in template.stop_strings if tokenizer.token_to_id(s) is None] + list(options.stop)


def stream_reply(model: nn.Module, tokenizer: Any, template: ChatTemplate, prompt: list[int],
                 options: DecodeOptions) -> Iterator[str]:
    """Yield the reply to an encoded chat prompt piece by piece, up to the end of the turn."""
    options.validate()
    stops = end_of_turn_ids(tokenizer, template)
    stream = TextStream(tokenizer, _text_stops(tokenizer, template, options))
    if options.num_beams > 1:  # beams know their answer only at the end
        hyp = generate_tokens(model, [prompt], options, stop_ids=stops)[0][0]
        ids = hyp.tokens[:-1] if hyp.finished else hyp.tokens
        for t in ids:
            stream.push(t)
        yield stream.flush()
        return
    yield from stream_pieces(model, prompt, options, tuple(stops), stream)


def chat_reply(model: nn.Module, tokenizer: Any, template: ChatTemplate, messages: Messages,
               options: DecodeOptions) -> str:
    """The assistant's reply to `messages` (the whole text)."""
    return "".join(stream_reply(model, tokenizer, template, encode_chat(tokenizer, template, messages),
                                options))


class ChatSession:
    """A conversation: the history, an optional system message, and a context budget.

    Before each reply the prompt must leave room for `options.max_new_tokens` new tokens in
    the model's context; if it does not, the oldest user/assistant turns are dropped (the
    system message stays) and `note` is told. A single turn that cannot fit is a ChatError.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, template: ChatTemplate,
                 system: str | None = None, options: DecodeOptions | None = None,
                 note: Callable[[str], None] = lambda text: None) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.system, self.note = system, note
        self.options = options or DecodeOptions()
        self.limit = context_limit(model)
        self.turns: list[dict[str, str]] = []

    @property
    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.turns = []

    def _fit(self) -> list[int]:
        """The prompt ids for the next reply, dropping the oldest turns until they fit."""
        room = self.options.max_new_tokens
        while True:
            ids = encode_chat(self.tokenizer, self.template, self.messages)
            if self.limit is None or len(ids) + room <= self.limit:
                return ids
            if len(self.turns) <= 1:
                self.turns = []
                raise ChatError(f"this message is too long: its prompt is {len(ids)} tokens and "
                                f"the reply needs room for {room} more, but the model's context "
                                f"is {self.limit} tokens (shorten it or lower --max-new-tokens)")
            dropped = 2 if len(self.turns) > 2 and self.turns[1]["role"] == "assistant" else 1
            self.turns = self.turns[dropped:]
            self.note(f"(context full: dropped the oldest turn; {(len(self.turns) - 1) // 2} "
                      f"earlier turn(s) kept)")

    def send(self, text: str) -> Iterator[str]:
        """Add a user turn and stream the assistant's reply (added to the history at the end)."""
        self.turns.append({"role": "user", "content": text})
        prompt = self._fit()
        pieces = []
        for piece in stream_reply(self.model, self.tokenizer, self.template, prompt, self.options):
            pieces.append(piece)
            yield piece
        self.turns.append({"role": "assistant", "content": "".join(pieces)})
