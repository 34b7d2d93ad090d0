"""Every case of the bad-input table: the expected exit code, one stderr line naming the
problem, no traceback, and every file of the world byte-identical afterwards."""

from __future__ import annotations

import pytest

from .cases import CASES, build_world, run_case


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return build_world(tmp_path_factory.mktemp("world") / "w")


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    monkeypatch.setattr("lmforge.train.loop.plot_metrics", lambda run_dir: None)


@pytest.mark.parametrize("case", CASES, ids=[c.item for c in CASES])
def test_bad_input_is_refused_cleanly(case, world, tmp_path):
    outcome = run_case(case, world, tmp_path / "w")
    assert not outcome.escaped, outcome.escaped
    assert outcome.code == case.code, (outcome.code, outcome.stderr)
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert any(case.stderr in line for line in lines), outcome.stderr
    if case.code != 2:  # argparse's usage errors print the usage line first
        assert len(lines) == 1, outcome.stderr
    assert outcome.changed == [], outcome.changed
    assert outcome.verdict(case) == "clear"
