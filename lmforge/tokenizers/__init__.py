"""Tokenizers: char, word, byte-level BPE and WordPiece, each a Hugging Face `tokenizers.Tokenizer`.

    from lmforge.tokenizers import train_tokenizer, load_tokenizer
    tok = train_tokenizer("bpe", ["some text", "more text"], vocab_size=300)
    tok.save("tok.json"); tok = load_tokenizer("tok.json")
"""

from .base import (
    ENCODER_SPECIAL_TOKENS,
    KINDS,
    SPECIAL_TOKENS,
    Tokenizer,
    load_tokenizer,
)
from . import hf  # noqa: F401  (registers the folder / vocab-file formats with load_tokenizer)
from .train import train_tokenizer

__all__ = [
    "ENCODER_SPECIAL_TOKENS",
    "KINDS",
    "SPECIAL_TOKENS",
    "Tokenizer",
    "load_tokenizer",
    "train_tokenizer",
]
