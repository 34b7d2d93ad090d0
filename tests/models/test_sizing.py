"""Sizing a family to a parameter budget."""

import dataclasses

import pytest

from lmforge.config import ConfigError, ModelConfig
from lmforge.models.build import build_model, count_parameters
from lmforge.models.sizing import params_of, size_for_params

ARCHS = ["bigram", "mlp", "rnn", "lstm", "gru", "cnn", "rcnn", "gpt"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("target", [30_000, 200_000])
def test_hits_the_budget_within_15_percent(arch, target):
    base = ModelConfig(n_layers=2, activation="tanh" if arch in ("rnn", "rcnn") else "gelu")
    cfg = size_for_params(arch, target, vocab_size=65, base=base)
    assert cfg.arch == arch and cfg.vocab_size == 65 and cfg.n_layers == 2
    real = count_parameters(build_model(cfg))  # a real build agrees with the meta-device count
    assert real == params_of(cfg)
    assert abs(real - target) <= 0.15 * target, f"{arch}: {real} for {target}"


def test_transformer_width_divides_heads_and_ff_ratio_is_kept():
    base = ModelConfig(n_heads=6, d_model=120, d_ff=240)
    cfg = size_for_params("gpt", 500_000, vocab_size=100, base=base)
    assert cfg.d_model % 6 == 0
    assert cfg.d_ff == round(240 * cfg.d_model / 120)
    small = size_for_params("gpt", 100_000, vocab_size=100, base=base)
    assert small.d_model < cfg.d_model
    assert base.d_model == 120  # the base is not modified


def test_unreachable_budgets_are_errors():
    with pytest.raises(ConfigError, match="parameters"):
        size_for_params("lstm", 10, vocab_size=1000)
    with pytest.raises(ConfigError, match="positive"):
        size_for_params("lstm", 0, vocab_size=10)
    with pytest.raises(ConfigError, match="arch"):
        size_for_params("nope", 1000, vocab_size=10)


def test_other_fields_survive():
    base = ModelConfig(d_embed=24, kernel_size=2, dropout=0.1, extra={"context": 8})
    cfg = size_for_params("mlp", 50_000, vocab_size=27, base=base)
    same = dataclasses.replace(cfg, d_model=base.d_model)
    assert same == dataclasses.replace(base, arch="mlp", vocab_size=27)
