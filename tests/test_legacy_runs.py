"""Run directories written by an older lmforge (main at 12e9797, before the registries
refactor) still load, generate, resume and evaluate — with the same results that lmforge
gave on them then (tests/fixtures/legacy_runs/expected.json, written by make_legacy_runs.py).

The fixtures are copied before use: nothing here may change them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lmforge.cli import main

LEGACY = Path(__file__).parent / "fixtures" / "legacy_runs"
DATA = LEGACY / "data"


def copy_run(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(LEGACY / name, dest)
    return dest


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def legacy_outcomes(tmp_path: Path) -> dict:
    """What lmforge does with the legacy runs: the numbers expected.json records."""
    from lmforge.pretrain import pretrain, resume_config
    from lmforge.run import load_run
    from lmforge.tasks.classify import TextClassifier, finetune

    gpt = copy_run("char_gpt", tmp_path)
    run = load_run(gpt, device="cpu")
    text = run.generate("ROMEO: ", max_new_tokens=12, temperature=0.0)
    score = run.score("ROMEO: my", " love")
    pretrain(resume_config(gpt, [f"data.path={DATA / 'corpus.txt'}", "train.max_steps=9"]),
             resume=True, log=lambda *a: None)
    gpt_weights = load_file(str(gpt / "model.safetensors"))

    clf_dir = copy_run("classifier", tmp_path)
    clf = TextClassifier.load(clf_dir, device="cpu")
    probs = clf.predict_proba(["a great film", "the plot was dull"]).tolist()
    report = clf.evaluate(DATA / "test.tsv", out_dir=tmp_path / "clf_eval")
    finetune(resume=clf_dir, data=DATA, overrides=["task.epochs=3"], log=lambda *a: None)
    clf_weights = load_file(str(clf_dir / "model.safetensors"))
    return {"generate": text, "score": score, "probs": probs,
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "gpt_resumed": {k: v.sum().item() for k, v in gpt_weights.items()},
            "clf_resumed": {k: v.sum().item() for k, v in clf_weights.items()}}


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr("lmforge.train.loop.plot_metrics", lambda run_dir: None)


def test_legacy_runs_load_generate_resume_as_before(tmp_path, no_plots):
    before = tree_digest(LEGACY)
    expected = json.loads((LEGACY / "expected.json").read_text())
    got = legacy_outcomes(tmp_path)
    assert got["generate"] == expected["generate"]
    assert got["score"] == pytest.approx(expected["score"], rel=1e-5)
    assert sum(got["probs"], []) == pytest.approx(sum(expected["probs"], []), rel=1e-5)
    assert (got["accuracy"], got["macro_f1"]) == (expected["accuracy"], expected["macro_f1"])
    for key in ("gpt_resumed", "clf_resumed"):  # resumed training continues as it did then
        assert got[key].keys() == expected[key].keys()
        for name, value in expected[key].items():
            assert got[key][name] == pytest.approx(value, rel=1e-4, abs=1e-5), (key, name)
    assert tree_digest(LEGACY) == before


def test_lmforge_evaluate_scores_legacy_runs(tmp_path, capsys):
    gpt = copy_run("char_gpt", tmp_path)
    assert main(["evaluate", str(gpt), "--data", str(DATA / "corpus.txt")]) == 0
    assert "perplexity" in capsys.readouterr().out
    clf = copy_run("classifier", tmp_path)
    assert main(["evaluate", str(clf), "--data", str(DATA), "--out", str(tmp_path / "e")]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "e" / "scores.json").read_text())["accuracy"] == \
        json.loads((LEGACY / "expected.json").read_text())["accuracy"]
