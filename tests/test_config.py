from pathlib import Path

import pytest

from lmforge.config import Config, ConfigError, load_config, parse_override

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_defaults_validate():
    Config().validate()


def test_overrides_are_typed():
    cfg = load_config(None, ["model.n_layers=6", "train.lr=3e-4", "train.compile=true",
                             "model.dilations=1,2,4"])
    assert cfg.model.n_layers == 6 and isinstance(cfg.model.n_layers, int)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.compile is True
    assert cfg.model.dilations == [1, 2, 4]


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'model.n_layer'.*did you mean 'n_layers'"):
        load_config(None, ["model.n_layer=3"])
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(None, ["trian.lr=1"])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="n_heads=3 does not divide model.d_model=128"):
        load_config(None, ["model.n_heads=3"])
    with pytest.raises(ConfigError, match="model.n_layers must be an integer"):
        load_config(None, ["model.n_layers=two"])
    with pytest.raises(ConfigError, match="model.activation='swish'"):
        load_config(None, ["model.activation=swish"])
    with pytest.raises(ConfigError, match="override 'train.lr' must look like key=value"):
        parse_override("train.lr")


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_model: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_loads_and_builds(path):
    from lmforge.models.build import build_model

    cfg = load_config(path)
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = 50
    if cfg.model.head in ("causal_lm", "masked_lm", "classifier"):
        model = build_model(cfg.model)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_activation_defaults_to_the_family_textbook_choice():
    assert load_config(None, ["model.arch=rnn"]).model.activation == "tanh"
    assert load_config(None, ["model.arch=gpt"]).model.activation == "gelu"
    assert load_config(None, ["model.arch=rnn", "model.activation=relu"]).model.activation == "relu"
