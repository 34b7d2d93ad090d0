"""Shared fixtures: tiny corpora made on the fly (tests never read ../shared)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


GLOO_ABORT = "terminate called without an active exception"


@pytest.fixture(scope="session")
def torchrun():
    """Launch `python -m torch.distributed.run --standalone` with 2 processes (one thread each,
    LMFORGE_CACHE at `cache`) on `args`; fails the test with the job's output unless it exits 0."""
    def launch(args: list[str], cache: Path, timeout: float = 120,
               nproc: int = 2) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "LMFORGE_CACHE": str(cache)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *map(str, args)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 and GLOO_ABORT in proc.stdout + proc.stderr:
            # a rank aborted inside the gloo backend's C++ threads (seen once in ~10 runs on a
            # clean clone, not reproducible): the whole job runs again once, from scratch
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    return launch
