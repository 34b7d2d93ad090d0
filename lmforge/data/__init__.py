"""Data: corpora -> cached token arrays, and the batches that feed the trainer."""

from .corpus import (
    TokenizedCorpus,
    corpus_texts_for_training,
    iter_documents,
    resolve_corpus_files,
    tokenize_corpus,
)
from .lm_batches import LMBatches

__all__ = [
    "LMBatches",
    "TokenizedCorpus",
    "corpus_texts_for_training",
    "iter_documents",
    "resolve_corpus_files",
    "tokenize_corpus",
]
