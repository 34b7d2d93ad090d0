"""Seeded hold-out of a share of a split's rows (a dev / validation set when the data has none)."""

from __future__ import annotations

import numpy as np


def holdout_rows(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept rows, held-out rows), each sorted, for `n` rows; at least one row is held out.

    The caller checks that rows remain (`len(kept) >= 1`) and names its data in the error.

    >>> holdout_rows(5, 0.4, seed=0)[1].__len__()
    2
    """
    n_out = max(1, int(round(n * fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_out:].tolist()), sorted(order[:n_out].tolist())
