"""Train a tokenizer of one kind on an iterable of texts.

    char       every distinct character of the text (BPE model with no merges); exact round trip
               for text made of seen characters; unseen ones become <unk>, or their UTF-8 bytes
               with `byte_fallback=True` (then the round trip is exact for any text)
    word       WordLevel over words, single punctuation marks and newlines; the `vocab_size` most
               frequent entries, the rest <unk>; decoding normalises spaces
    bpe        byte-level BPE (GPT-2 style) trained to `vocab_size`; exact round trip on any text
    wordpiece  BERT-style WordPiece (`##` continuations, [CLS] [SEP] [MASK])

Special tokens: <pad> <unk> <bos> <eos> are ids 0-3 in every kind; [CLS] [SEP] [MASK] are ids
4-6 for wordpiece, and for the other kinds when `encoder_specials=True`.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator

import numpy as np
import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ..config import ConfigError
from .base import ENCODER_SPECIAL_TOKENS, KINDS, SPECIAL_TOKENS, Tokenizer, check_texts

BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]  # the names `byte_fallback` looks up
# word kind: a word (\w+), one punctuation mark or symbol, or a newline; other whitespace is dropped
WORD_PATTERN = r"\w+|[^\w\s]|\n"


def _special_list(encoder_specials: bool) -> list[str]:
    return SPECIAL_TOKENS + (ENCODER_SPECIAL_TOKENS if encoder_specials else [])


def _specials_map(encoder_specials: bool) -> dict[str, str | None]:
    roles = dict(zip(("pad", "unk", "bos", "eos"), SPECIAL_TOKENS))
    enc = dict(zip(("cls", "sep", "mask"), ENCODER_SPECIAL_TOKENS if encoder_specials else [None] * 3))
    return {**roles, **enc}


def _bos_eos_template() -> processors.TemplateProcessing:
    # used only by encode(..., add_special=True): "<bos> text <eos>"
    return processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B:1 <eos>:1", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )


def _counted(texts: Iterable[str], counter: list[int]) -> Iterator[str]:
    """Pass texts through, adding their total length to counter[0] (to detect empty input)."""
    for t in texts:
        if not isinstance(t, str):
            raise ConfigError(f"tokenizer training texts must be strings, got {type(t).__name__}")
        counter[0] += len(t)
        yield t


def count_chars(texts: Iterable[str]) -> Counter[str]:
    """Character frequencies, vectorised through UTF-32 code points.

    >>> count_chars(["abca"]) == Counter({"a": 2, "b": 1, "c": 1})
    True
    """
    total: Counter[str] = Counter()
    for t in texts:
        if not t:
            continue
        cps = np.frombuffer(t.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        values, counts = np.unique(cps, return_counts=True)
        total.update({chr(int(v)): int(c) for v, c in zip(values, counts)})
    return total


# --------------------------------------------------------------------------- one builder per kind


def build_char(
    chars: Iterable[str], byte_fallback: bool = False, encoder_specials: bool = False, lowercase: bool = False
) -> tokenizers.Tokenizer:
    """A char-level tokenizer over `chars` (ids follow the specials, in the given order)."""
    specials = _special_list(encoder_specials)
    vocab: dict[str, int] = {t: i for i, t in enumerate(specials)}
    for t in BYTE_TOKENS if byte_fallback else []:
        vocab[t] = len(vocab)
    for c in chars:
        vocab.setdefault(c, len(vocab))
    # A BPE model with no merges maps each character to its own id; no pre-tokenizer, so spaces
    # and newlines are characters like any other, and Fuse joins tokens back with no separator.
    model = models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=False, byte_fallback=byte_fallback)
    tok = tokenizers.Tokenizer(model)
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()]) if byte_fallback else decoders.Fuse()
    tok.post_processor = _bos_eos_template()
    tok.add_special_tokens(specials)
    return tok


def _train_char(texts, vocab_size, lowercase, min_frequency, byte_fallback, encoder_specials):
    counts = count_chars(t.lower() if lowercase else t for t in texts)
    n_fixed = len(_special_list(encoder_specials)) + (256 if byte_fallback else 0)
    kept = [c for c, n in counts.items() if n >= min_frequency]
    if len(kept) > vocab_size - n_fixed:  # cap: keep the most frequent characters
        kept = sorted(kept, key=lambda c: (-counts[c], c))[: max(vocab_size - n_fixed, 0)]
    return build_char(sorted(kept), byte_fallback, encoder_specials, lowercase)


def _train_word(texts, vocab_size, lowercase, min_frequency, encoder_specials):
    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="<unk>"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
    tok.post_processor = _bos_eos_template()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency,
        special_tokens=_special_list(encoder_specials), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _train_bpe(texts, vocab_size, lowercase, min_frequency, encoder_specials):
    specials = _special_list(encoder_specials)
    if vocab_size < 256 + len(specials):
        raise ConfigError(
            f"tokenizer.vocab_size={vocab_size} is too small for byte-level BPE: it needs at least "
            f"{256 + len(specials)} (256 bytes + {len(specials)} special tokens)"
        )
    tok = tokenizers.Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    # GPT-2 byte-level: every byte is a symbol, so nothing is ever unknown and decoding is exact;
    # no prefix space and untrimmed offsets keep the text unchanged.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), _bos_eos_template()])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def wordpiece_pipeline(tok: tokenizers.Tokenizer, lowercase: bool, cls: str, sep: str) -> None:
    """Give `tok` BERT's normaliser, pre-tokeniser, [CLS] text [SEP] template and ## decoder."""
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    cls_id, sep_id = tok.token_to_id(cls), tok.token_to_id(sep)
    if cls_id is not None and sep_id is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)],
        )


def _train_wordpiece(texts, vocab_size, lowercase, min_frequency):
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="<unk>", continuing_subword_prefix="##"))
    wordpiece_pipeline(tok, lowercase, "[CLS]", "[SEP]")  # normaliser + pre-tokeniser for training
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=_special_list(True),
        continuing_subword_prefix="##", show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    wordpiece_pipeline(tok, lowercase, "[CLS]", "[SEP]")  # again: the template needs the trained ids
    return tok


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocab_size: int = 4096,
    lowercase: bool = False,
    min_frequency: int = 1,
    *,
    byte_fallback: bool = False,
    encoder_specials: bool | None = None,
) -> Tokenizer:
    """Train a `kind` tokenizer ("char", "word", "bpe" or "wordpiece") on `texts`.

    Args:
        vocab_size: the target size, special tokens included (an upper bound for char/word).
        min_frequency: drop characters/words/merges seen fewer times than this.
        byte_fallback: char only; unseen characters become UTF-8 byte tokens instead of <unk>.
        encoder_specials: add [CLS] [SEP] [MASK] (ids 4-6); always on for wordpiece.
    """
    if kind not in KINDS:
        raise ConfigError(f"tokenizer.kind={kind!r} is not one of {', '.join(KINDS)}")
    encoder_specials = True if kind == "wordpiece" else bool(encoder_specials)
    n_special = len(_special_list(encoder_specials))
    if vocab_size <= n_special:
        raise ConfigError(f"tokenizer.vocab_size={vocab_size} must exceed the {n_special} special tokens")
    if min_frequency < 1:
        raise ConfigError(f"tokenizer.min_frequency must be >= 1, got {min_frequency}")
    if byte_fallback and kind != "char":
        raise ConfigError(f"byte_fallback applies to kind 'char' only (bpe is byte-level already), got {kind!r}")
    seen = [0]
    texts = _counted(check_texts(texts), seen)
    if kind == "char":
        backend = _train_char(texts, vocab_size, lowercase, min_frequency, byte_fallback, encoder_specials)
    elif kind == "word":
        backend = _train_word(texts, vocab_size, lowercase, min_frequency, encoder_specials)
    elif kind == "bpe":
        backend = _train_bpe(texts, vocab_size, lowercase, min_frequency, encoder_specials)
    else:
        backend = _train_wordpiece(texts, vocab_size, lowercase, min_frequency)
    if seen[0] == 0:
        raise ConfigError("tokenizer training text is empty")
    options = {"lowercase": lowercase, "byte_fallback": byte_fallback, "min_frequency": min_frequency}
    tok = Tokenizer(backend, kind, _specials_map(encoder_specials), options)
    assert [tok.token_to_id(t) for t in _special_list(encoder_specials)] == list(range(n_special))
    return tok
