"""Instruction data for SFT: read the common chat file shapes, render them with the base's
chat template, and mark the tokens that carry loss.

Accepted shapes (one JSON object per line in .jsonl, or a JSON list of objects in .json),
detected per record or named with `data.format`:

    messages           {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}
    sharegpt           {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}
    alpaca             {"instruction": "...", "input": "...", "output": "..."}   (input optional)
    prompt_completion  {"prompt": "...", "completion": "..."}

Alpaca and prompt/completion rows become a user turn and an assistant turn (Alpaca's input
follows the instruction after a blank line), so every shape is rendered by the same chat
template: the base run's (ChatML, with a warning, when the base has none).

Loss masking: the rendered conversation is tokenized once (with character offsets); the
tokens of each assistant reply, from the end of the generation prompt to the end of the
turn (its end-of-turn token included, so the model learns to stop), carry loss; with
`train_on_prompt` every token does. Spans are found by rendering prefixes: messages[:i]
with the generation prompt ends where reply i starts, messages[:i+1] where it ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..config import ConfigError

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "tool": "tool", "function": "tool"}


@dataclass
class Conversation:
    """One training example: its messages and where it came from (file:line)."""

    messages: list[dict[str, str]]
    where: str


# --------------------------------------------------------------------------- reading


def read_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(file:line, record) for every JSON record of a .jsonl file or a .json list.

    A .json file whose top level is a list yields its items with the line each starts on;
    anything else is read as JSON Lines (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        yield from _with_lines(path, text, items)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number}: not valid JSON ({err.msg})") from None


def _with_lines(path: Path, text: str, items: list) -> Iterator[tuple[str, Any]]:
    """Items of a top-level JSON list with the line of each item's opening brace."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    for item in items:
        while text[pos] in " \t\r\n,":
            pos += 1
        line = text.count("\n", 0, pos) + 1
        _, pos = decoder.raw_decode(text, pos)
        yield f"{path}:{line}", item


def detect_format(record: Any, where: str) -> str:
    """The shape of one record (see the module docstring)."""
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    raise ConfigError(f"{where}: unknown record shape with keys {sorted(record)[:6]}; expected "
                      "messages, conversations (ShareGPT), instruction/input/output (Alpaca) "
                      "or prompt/completion")


def _text(record: Mapping, key: str, where: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "is missing" if value is None else f"must be a string, got {type(value).__name__}"
        raise ConfigError(f"{where}: field {key!r} {what}")
    return value


def _turns(turns: Any, where: str, role_key: str, content_key: str,
           roles: Mapping[str, str] | None) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise ConfigError(f"{where}: the conversation must be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise ConfigError(f"{where}: turn {i} is not an object")
        role = turn.get(role_key)
        valid = roles if roles is not None else {r: r for r in ROLES}
        if role not in valid:
            raise ConfigError(f"{where}: turn {i} has unknown role {role!r} "
                              f"(valid: {', '.join(valid)})")
        if turn.get(content_key) is None:
            raise ConfigError(f"{where}: turn {i} ({role}) has no {content_key!r}")
        messages.append({"role": valid[role], "content": _text(turn, content_key, f"{where}: turn {i}")})
    return messages


def to_messages(record: Any, fmt: str, where: str) -> list[dict[str, str]]:
    """One record as a list of {"role", "content"} messages."""
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if fmt == "messages":
        messages = _turns(record.get("messages"), where, "role", "content", None)
    elif fmt == "sharegpt":
        messages = _turns(record.get("conversations"), where, "from", "value", SHAREGPT_ROLES)
    elif fmt == "alpaca":
        instruction = _text(record, "instruction", where)
        extra = _text(record, "input", where, required=False)
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "user", "content": prompt},
                    {"role": "assistant", "content": _text(record, "output", where)}]
    elif fmt == "prompt_completion":
        prompt = record.get("prompt")
        user = _turns(prompt, where, "role", "content", None) if isinstance(prompt, list) else \
            [{"role": "user", "content": _text(record, "prompt", where)}]
        messages = user + [{"role": "assistant", "content": _text(record, "completion", where)}]
    else:
        raise ConfigError(f"data.format={fmt!r} is not one of {', '.join(FORMATS)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ConfigError(f"{where}: the conversation has no assistant turn (nothing to learn)")
    if messages[0]["role"] == "assistant":
        raise ConfigError(f"{where}: the conversation starts with an assistant turn; "
                          "put the user (or system) turn that prompts it first")
    return messages


def read_conversations(path: str | Path, fmt: str = "") -> list[Conversation]:
    """Every conversation of a chat file; `fmt` "" = each record's shape detected."""
    if fmt and fmt not in FORMATS:
        raise ConfigError(f"data.format={fmt!r} is not one of {', '.join(FORMATS)}")
    out = []
    for where, record in read_records(path):
        shape = fmt or detect_format(record, where)  # detected row by row unless named
        out.append(Conversation(to_messages(record, shape, where), where))
    if not out:
        raise ConfigError(f"{path}: no records (only blank lines)")
    return out


# --------------------------------------------------------------------------- rendering


@dataclass
class Encoded:
    """A rendered, tokenized example: ids (L,) and the positions that carry loss (L,)."""

    ids: np.ndarray
    loss_mask: np.ndarray
    truncated: bool = False


def assistant_spans(template: Any, messages: Sequence[Mapping[str, str]], where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant replies."""
    full = template.render(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(template.render(messages[:i], add_generation_prompt=True))
        upto = template.render(messages[: i + 1])
        if not full.startswith(upto) or start > len(upto):
            raise ConfigError(f"{where}: the chat template does not render this conversation "
                              "turn by turn (a prefix renders differently), so assistant "
                              "tokens cannot be found; use task.train_on_prompt=true")
        spans.append((start, len(upto)))
    return full, spans


def encode_conversation(template: Any, tokenizer: Any, messages: Sequence[Mapping[str, str]],
                        where: str, max_len: int, train_on_prompt: bool = False,
                        bos_id: int | None = None, last_reply_only: bool = False) -> Encoded:
    """Token ids of the rendered chat and its loss mask, cut to `max_len` + 1 tokens.

    `bos_id` is prepended when the base's tokenizer adds one and the template did not.
    The mask says which *tokens* are learned; the task shifts it onto the targets.
    `last_reply_only` marks the final assistant reply alone (DPO's completion).
    """
    text, spans = assistant_spans(template, messages, where)
    if last_reply_only:
        spans = spans[-1:]
    enc = tokenizer.backend.encode(text, add_special_tokens=False)
    ids = list(enc.ids)
    if train_on_prompt:
        mask = [True] * len(ids)
    else:
        starts = [s for s, _ in enc.offsets]
        mask = [any(a <= s < b for a, b in spans) for s in starts]
    if bos_id is not None and (not ids or ids[0] != bos_id):
        ids, mask = [bos_id] + ids, [False] + mask
    truncated = len(ids) > max_len + 1
    ids, mask = ids[: max_len + 1], mask[: max_len + 1]
    return Encoded(np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool), truncated)


@dataclass
class EncodedSplit:
    """The examples of one split with the counts a user should see."""

    examples: list[Encoded]
    truncated: int
    dropped: int  # truncated so far that no loss token was left

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(e.ids) for e in self.examples], dtype=np.int64)


def encode_split(conversations: Sequence[Conversation], template: Any, tokenizer: Any,
                 max_len: int, train_on_prompt: bool, bos_id: int | None) -> EncodedSplit:
    """Encode every conversation; examples left without a loss token are dropped (counted)."""
    kept, truncated, dropped = [], 0, 0
    for conv in conversations:
        enc = encode_conversation(template, tokenizer, conv.messages, conv.where, max_len,
                                  train_on_prompt, bos_id)
        truncated += enc.truncated
        if not enc.loss_mask[1:].any():  # the first token is never a target
            dropped += 1
            continue
        kept.append(enc)
    return EncodedSplit(kept, truncated, dropped)


def split_off(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): a seeded random `fraction` of `items` held out (at least one each)."""
    if len(items) < 2:
        raise ConfigError(f"{len(items)} example(s): too few to hold out a validation set; "
                          "give --val FILE")
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = min(max(1, round(fraction * len(items))), len(items) - 1)
    val = set(order[:n_val].tolist())
    return ([x for i, x in enumerate(items) if i not in val],
            [x for i, x in enumerate(items) if i in val])
