"""Preference pairs for DPO: read, check, render with the chat template, batch.

One JSON object per line (or a JSON list): {"prompt", "chosen", "rejected"}. The prompt is
a string (one user turn) or a list of messages; chosen and rejected are strings (or one
assistant message each). Each side is rendered as prompt + assistant reply with the base's
chat template; only the reply's tokens (and its end-of-turn token) are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import ConfigError
from .sft_batches import collate_lm
from .sft_data import Encoded, _text, _turns, encode_conversation, read_records


@dataclass
class PreferencePair:
    """Prompt messages with a preferred and a dispreferred reply, and where the row is."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    where: str


def _reply(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if isinstance(value, list):  # [{"role": "assistant", "content": ...}]
        turns = _turns(value, where, "role", "content", None)
        if len(turns) != 1 or turns[0]["role"] != "assistant":
            raise ConfigError(f"{where}: {key!r} must be a string or one assistant message")
        return turns[0]["content"]
    return _text(record, key, where)


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Every preference pair of a file; a row whose chosen equals its rejected is refused."""
    pairs = []
    for where, record in read_records(path):
        if not isinstance(record, dict) or not {"prompt", "chosen", "rejected"} <= set(record):
            keys = sorted(record)[:6] if isinstance(record, dict) else type(record).__name__
            raise ConfigError(f"{where}: a preference row needs prompt, chosen and rejected "
                              f"(got {keys})")
        prompt = record["prompt"]
        messages = _turns(prompt, where, "role", "content", None) if isinstance(prompt, list) \
            else [{"role": "user", "content": _text(record, "prompt", where)}]
        chosen, rejected = _reply(record, "chosen", where), _reply(record, "rejected", where)
        if chosen == rejected:
            raise ConfigError(f"{where}: chosen equals rejected (the pair states no preference)")
        pairs.append(PreferencePair(messages, chosen, rejected, where))
    if not pairs:
        raise ConfigError(f"{path}: no preference pairs")
    return pairs


@dataclass
class EncodedPairs:
    """Encoded chosen / rejected sides, pair by pair, with the counts to report."""

    chosen: list[Encoded]
    rejected: list[Encoded]
    truncated: int
    dropped: int

    @property
    def lengths(self) -> list[int]:
        return [max(len(c.ids), len(r.ids)) for c, r in zip(self.chosen, self.rejected)]

    def __len__(self) -> int:
        return len(self.chosen)


def encode_pairs(pairs: Sequence[PreferencePair], template: Any, tokenizer: Any, max_len: int,
                 bos_id: int | None) -> EncodedPairs:
    """Both sides of every pair; a pair whose reply was truncated away on a side is dropped."""
    chosen, rejected, truncated, dropped = [], [], 0, 0
    for pair in pairs:
        sides = [encode_conversation(template, tokenizer,
                                     pair.prompt + [{"role": "assistant", "content": reply}],
                                     pair.where, max_len, bos_id=bos_id, last_reply_only=True)
                 for reply in (pair.chosen, pair.rejected)]
        truncated += any(s.truncated for s in sides)
        if not all(s.loss_mask[1:].any() for s in sides):
            dropped += 1
            continue
        chosen.append(sides[0])
        rejected.append(sides[1])
    return EncodedPairs(chosen, rejected, truncated, dropped)


def collate_pairs(pairs: EncodedPairs, rows: Sequence[int], pad_id: int,
                  device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen rows then rejected rows as one batch: x, y (2B, T); y is IGNORE_INDEX off the
    replies, so summing log p(y) over a row gives log p(reply | prompt)."""
    examples = [pairs.chosen[i] for i in rows] + [pairs.rejected[i] for i in rows]
    return collate_lm(examples, pad_id, device)
