"""Say when text holds characters a tokenizer cannot represent (they become <unk>).

A model fine-tuned or prompted with such text silently sees one id for all of them; one warning
with the count and a few examples tells the user before the run or the output is wasted.
"""

from __future__ import annotations

from typing import Any, Iterable


def unknown_characters(tokenizer: Any, texts: Iterable[str], max_chars: int = 2_000_000,
                       examples: int = 5) -> tuple[int, list[str]]:
    """(number of <unk> ids the texts encode to, up to `examples` characters that map to <unk>),
    reading at most `max_chars` characters. (0, []) when the tokenizer has no <unk>."""
    unk = tokenizer.unk_id
    if unk is None:
        return 0, []
    count, seen, found, budget = 0, set(), [], max_chars
    for text in texts:
        if budget <= 0:
            break
        text = text[:budget]
        budget -= len(text)
        n = tokenizer.encode(text).count(unk)
        if not n:
            continue
        count += n
        for ch in set(text) - seen:  # which characters are the unknown ones
            seen.add(ch)
            if len(found) < examples and not ch.isspace() and tokenizer.encode(ch) == [unk]:
                found.append(ch)
    return count, sorted(found)


def warn_unknown(tokenizer: Any, texts: Iterable[str], what: str, warn: Any) -> int:
    """Call `warn(line)` once when `texts` encode to <unk>; returns the count."""
    count, chars = unknown_characters(tokenizer, texts)
    if count:
        shown = ", ".join(repr(c) for c in chars) or "(whole words)"
        warn(f"warning: {count} token(s) of {what} are unknown to the tokenizer and become <unk> "
             f"(e.g. {shown}); the model never saw them")
    return count
