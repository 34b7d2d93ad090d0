"""Config discoverability: show / keys / diff / docs, docs/config.md up to date, --version."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import lmforge
from lmforge.cli import main
from lmforge.config import load_config
from lmforge.config_docs import markdown, section_keys

ROOT = Path(__file__).parents[1]


def test_docs_config_md_is_up_to_date():
    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert page == markdown() + "\n", \
        "docs/config.md is out of date: run `lmforge config docs --out docs/config.md`"


@pytest.mark.parametrize("section", ["model", "tokenizer", "data", "train"])
def test_every_key_has_a_meaning(section):
    undocumented = [k.key for k in section_keys(section) if not k.doc]
    assert not undocumented, f"add a comment to these fields in lmforge/config.py: {undocumented}"


def test_keys_reads_the_field_comment_type_and_default(capsys):
    assert main(["config", "keys", "train"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["train.warmup_steps"].split()[1:4] == ["int", "100", "linear"]
    assert "trackers, comma-separated" in lines["train.log"]
    assert main(["config", "keys", "task.classify"]) == 0
    out = capsys.readouterr().out
    assert "task.lora.rank" in out and "task.epochs" in out


def test_show_resolves_a_recipe_with_each_key_explained(capsys):
    assert main(["config", "show", str(ROOT / "configs" / "translate-transformer.yaml"),
                 "train.lr=5e-4"]) == 0
    out = capsys.readouterr().out
    data = yaml.safe_load(out)  # still valid YAML: the explanations are comments
    cfg = load_config(ROOT / "configs" / "translate-transformer.yaml", ["train.lr=5e-4"])
    assert data["train"] == cfg.to_dict()["train"]
    assert data["task"]["beams"] == 5  # the seq2seq task's defaults fill the task section
    lr_line = next(line for line in out.splitlines() if line.strip().startswith("lr:"))
    assert "# peak learning rate" in lr_line and "[default 0.003]" in lr_line


def test_show_and_diff_runs(tmp_path, capsys):
    for name, lr in (("a", 1e-3), ("b", 2e-3)):
        (tmp_path / name).mkdir()
        cfg = load_config(None, [f"train.lr={lr}", f"out={tmp_path / name}"])
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["config", "diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"out: {tmp_path / 'a'} -> {tmp_path / 'b'}", "train.lr: 0.001 -> 0.002"]
    for name, loss in (("a", 2.5), ("b", 2.25)):
        (tmp_path / name / "metrics.csv").write_text(
            f"step,split,loss\n10,train,3.0\n10,val,{loss + 0.5}\n20,val,{loss}\n")
    assert main(["config", "diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "(result) best val loss: 2.5000 -> 2.2500"
    assert main(["config", "diff", str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out.splitlines() == ["no config differences",
                                                   "(result) best val loss: 2.5000 -> 2.5000"]
    assert main(["config", "show", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["config", "keys", "trian"]) == 1
    assert "unknown config section 'trian'" in capsys.readouterr().err


def test_version_and_help_point_to_the_keys(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lmforge {lmforge.__version__}"
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "lmforge config keys" in capsys.readouterr().out
    assert main(["finetune", "--help"]) == 0
    assert "docs/config.md" in capsys.readouterr().out
