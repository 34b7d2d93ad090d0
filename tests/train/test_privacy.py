"""DP-SGD through Opacus: exact per-example gradients, the accountant, resume, refusals."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch

from lmforge.config import ConfigError, ModelConfig, load_config
from lmforge.models.build import build_model
from lmforge.train import privacy
from tests.train.test_loop import make_trainer

pytest.importorskip("opacus")


def dp_cfg(*extra):
    return load_config(None, ["train.dp.epsilon=8", "train.batch_size=4", "train.max_steps=10",
                              *extra]).train


def classifier(arch: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, head="classifier", vocab_size=30, d_model=16,
                                   n_layers=2, n_heads=2, max_len=12, pooling="mean", **kw))


@pytest.mark.parametrize("arch, kw", [("lstm", {}), ("gru", {"bidirectional": True}),
                                      ("rnn", {}), ("gpt", {"positional": "rotary"}),
                                      ("cnn", {"filter_widths": [2, 3]})])
def test_noiseless_unclipped_dp_step_equals_the_plain_step(arch, kw):
    """With no noise and a clip no gradient reaches, DP-SGD is plain SGD: this proves the
    per-example gradients (packed, padded DPLSTM/DPGRU/DPRNN rows included) are exact."""
    ids = torch.randint(1, 30, (5, 12))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 7:] = mask[3, 4:] = False
    ids[~mask] = 0
    labels = torch.tensor([0, 1, 1, 0, 1])
    plain = classifier(arch, **kw)
    plain(ids, labels, mask=mask)[1].backward()
    expected = {n: p.grad.clone() for n, p in plain.named_parameters()}

    model = classifier(arch, **kw)
    hooks = privacy.Privacy(dp_cfg("train.batch_size=5"), n_examples=100, log=lambda *a: None)
    hooks.noise_multiplier, hooks.max_grad_norm = 0.0, 1e9
    hooks.prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    train_model, dp_opt = hooks.wrap(model, opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def closure():
        dp_opt.zero_grad(set_to_none=True)
        loss = train_model(ids, labels, mask=mask)[1]
        loss.backward()
        return loss

    dp_opt.step(closure)
    assert set(before) == set(expected)  # DP layers keep torch's parameter names
    for name, p in model.named_parameters():
        torch.testing.assert_close(before[name] - p.detach(), expected[name], atol=1e-5, rtol=1e-4)
    assert len(hooks.accountant.history) == 1


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr("lmforge.train.loop.plot_metrics", lambda run_dir: None)


def test_lm_dp_run_logs_epsilon_and_resumes_exactly(tiny_corpus, tmp_path, no_plots):
    extra = ["train.dp.epsilon=3", "train.grad_accum=1", "model.arch=lstm", "model.dropout=0"]
    straight = make_trainer(tiny_corpus, tmp_path / "straight", overrides=extra)
    straight.fit()
    stopped = make_trainer(tiny_corpus, tmp_path / "stopped", overrides=extra)
    stopped.fit(until_step=10)
    resumed = make_trainer(tiny_corpus, tmp_path / "stopped", resume=True, overrides=extra)
    assert resumed.privacy.epsilon() == pytest.approx(stopped.privacy.epsilon())
    resumed.fit()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    rows = {}
    for run in ("straight", "stopped"):
        with open(tmp_path / run / "metrics.csv") as fh:
            rows[run] = [(r["step"], r["split"], r["epsilon"]) for r in csv.DictReader(fh)]
    assert rows["straight"] == rows["stopped"]
    spent = [float(e) for _, split, e in rows["straight"] if split == "train"]
    assert spent == sorted(spent) and 0 < spent[0] and spent[-1] == pytest.approx(3.0, rel=0.02)


def test_lm_learns_under_dp(tiny_corpus, tmp_path, no_plots):
    trainer = make_trainer(tiny_corpus, tmp_path / "run", overrides=[
        "train.dp.epsilon=8", "train.grad_accum=1", "model.positional=rotary", "train.lr=1e-2"])
    first = trainer.evaluate()["loss"]
    assert trainer.fit()["loss"] < first - 0.3


@pytest.mark.parametrize("overrides, message", [
    (["train.dp.epsilon=0"], "train.dp.epsilon must be > 0, got 0"),
    (["train.dp.epsilon=-1"], "train.dp.epsilon must be > 0, got -1"),
    (["train.dp.epsilon=8", "train.dp.delta=2"], "train.dp.delta must be in (0, 1)"),
])
def test_bad_budgets_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


@pytest.mark.parametrize("overrides, message", [
    (["train.grad_accum=2"], "cannot be combined with train.grad_accum > 1"),
    (["train.grad_accum=1"], r"layer 'backbone.pos' \(LearnedPositions\)"),
    (["train.grad_accum=1", "model.arch=rnn", "model.activation=sigmoid"],
     r"layer 'backbone.cells.0' \(RNNCell\) is not supported"),
])
def test_unsupported_setups_are_refused_naming_the_layer(tiny_corpus, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_trainer(tiny_corpus, tmp_path / "run", overrides=["train.dp.epsilon=8", *overrides])


def test_dp_state_is_in_the_checkpoint(tiny_corpus, tmp_path):
    from lmforge.train.checkpoint import load_trainer_state

    trainer = make_trainer(tiny_corpus, tmp_path / "run", overrides=[
        "train.dp.epsilon=8", "train.grad_accum=1", "model.positional=rotary"])
    trainer.fit(until_step=4)
    state = load_trainer_state(tmp_path / "run")["privacy"]  # weights_only load
    assert len(state["history"]) == 1 and state["history"][0][2] == 4
    json.dumps(state)  # plain values only


def test_classifier_finetune_under_dp_spends_its_budget(tmp_path, no_plots):
    from lmforge.tasks.classify import finetune
    from tests.tasks.test_classify import TINY, toy_rows, write_split

    data = tmp_path / "toy"
    data.mkdir()
    write_split(data / "train.tsv", toy_rows(64, 0))
    write_split(data / "dev.tsv", toy_rows(8, 1))
    # a deep copy: finetune's overrides write into the nested dicts of the config it is given
    run = finetune(data, config=copy.deepcopy(TINY), out=tmp_path / "run", epochs=1,
                   log=lambda *a, **k: None,
                   overrides=["train.dp.epsilon=3", "train.dp.max_grad_norm=0.5"])
    with open(run / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    assert float(rows[-1]["epsilon"]) == pytest.approx(3.0, rel=0.02)
