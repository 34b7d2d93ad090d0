"""Shared fixtures: tiny corpora made on the fly (tests never read ../shared)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    # one thread: the tests' models are tiny, and thread hand-offs cost more than they save
    # (and oversubscribe CI's two cores when several processes run)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small text file with enough repeated structure for a model to learn from."""
    lines = []
    for i in range(300):
        lines.append(f"ROMEO: my love is {['true', 'blind', 'sweet'][i % 3]} as the night.")
        lines.append(f"JULIET: the {['moon', 'sun', 'star'][i % 3]} doth shine on thee.")
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
