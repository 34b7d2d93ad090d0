"""The two registries: every family and task is declared once, and the dispatchers ask them."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from lmforge.config import ConfigError, ModelConfig, load_config
from lmforge.finetune import cli as finetune_cli
from lmforge.models import registry as models
from lmforge.models.backbone import Backbone
from lmforge.models.build import build_model
from lmforge.models.sizing import size_for_params
from lmforge.tasks import registry as tasks


@pytest.mark.parametrize("arch", models.buildable())
def test_every_registered_backbone_keeps_the_contract(arch):
    cfg = ModelConfig(arch=arch, vocab_size=20, d_model=8, n_layers=1, n_heads=2, max_len=8,
                      extra={"context": 3} if arch == "mlp" else {},
                      head="masked_lm" if arch == "bert" else "causal_lm")
    model = build_model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, Backbone)
    assert backbone.embed.num_embeddings == 20 and backbone.out_dim > 0
    hidden, _ = backbone(torch.randint(0, 20, (2, 5)))
    assert hidden.shape == (2, 5, backbone.out_dim)
    assert backbone.kv_cache == (backbone.init_state(1) is not None)
    assert cfg.activation == models.backbone_spec(arch).activation


def test_one_registry_line_makes_a_new_family_known_everywhere(monkeypatch):
    spec = models.BackboneSpec("toygpt", "lmforge.models.gpt:build_gpt", needs_heads=True,
                               positional=True, activation="relu",
                               arena={"model": {}, "train": {"lr": 1e-3}})
    monkeypatch.setitem(models.BACKBONES, "toygpt", spec)
    assert ModelConfig(arch="toygpt").activation == "relu"  # config.py
    with pytest.raises(ConfigError, match="n_heads=3 does not divide"):  # needs_heads
        ModelConfig(arch="toygpt", d_model=16, n_heads=3).validate()
    model = build_model(ModelConfig(arch="toygpt", vocab_size=11, d_model=8, n_layers=1, n_heads=2))
    assert model.backbone.out_dim == 8  # models/build.py
    assert size_for_params("toygpt", 20_000, vocab_size=11, base=ModelConfig(n_heads=4)).d_model % 4 == 0
    assert "toygpt" in models.arena_archs()  # compare.py reads it


def test_one_registry_line_makes_a_new_task_reachable(monkeypatch, tmp_path, capsys):
    module = types.ModuleType("lmforge_toy_task")
    calls = []
    module.finetune_cli = lambda argv: calls.append(("finetune", argv)) or 0
    module.evaluate_cli = lambda argv: calls.append(("evaluate", argv)) or 0
    monkeypatch.setitem(sys.modules, "lmforge_toy_task", module)
    monkeypatch.setitem(tasks.TASKS, "toy", tasks.TaskSpec(
        "toy", "a toy task", finetune="lmforge_toy_task", evaluate="lmforge_toy_task:evaluate_cli"))
    assert finetune_cli(["toy", "--x", "1"]) == 0
    finetune_cli(["--help"])
    assert "toy" in capsys.readouterr().out
    # a run whose config names its task goes to that task's evaluator, whatever its head
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_config.json").write_text(ModelConfig(vocab_size=5).to_json())
    (run / "config.yaml").write_text("task:\n  name: toy\n")
    from lmforge.cli import main

    assert main(["evaluate", str(run), "--data", "d"]) == 0
    assert calls == [("finetune", ["--x", "1"]), ("evaluate", [str(run), "--data", "d"])]
    assert tasks.task_of_run(run).name == "toy"
    (run / "config.yaml").write_text("task: {}\n")
    assert tasks.task_of_run(run).name == "lm"  # by head: causal_lm


def test_every_shipped_recipe_names_a_registered_family_and_task():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert models.known(cfg.model.arch), path.name
        assert tasks.task_for_head(cfg.model.head), path.name
