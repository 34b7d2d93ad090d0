"""Every script in examples/ runs end to end in its --quick mode (the flax / tinygrad habit:
examples are smoke tests). Each runs in-process as `__main__`, in a temporary folder, with the
token cache there too; data an example needs is made here (tests never read ../shared)."""

from __future__ import annotations

import random
import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def run_example(tmp_path, monkeypatch, capsys):
    """run_example("name.py", *args) -> its stdout; runs in tmp_path with a private cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))

    def run(name: str, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), "--quick", *args])
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
        return capsys.readouterr().out

    return run


def sst2_folder(root: Path) -> Path:
    """A tiny SST-2-format folder: train/dev/test .tsv with `sentence<TAB>label`."""
    rng = random.Random(0)
    words = {1: ["great", "wonderful", "gripping", "funny"], 0: ["dull", "tedious", "awful", "boring"]}
    root.mkdir()
    for split, n in (("train", 120), ("dev", 20), ("test", 20)):
        rows = [f"a {rng.choice(words[i % 2])} and {rng.choice(words[i % 2])} film .\t{i % 2}"
                for i in range(n)]
        (root / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def parallel_folder(root: Path) -> Path:
    """A tiny German/English parallel folder: train.de/.en and val.de/.en, aligned by line."""
    rng = random.Random(0)
    nouns = {"Hund": "dog", "Mann": "man", "Frau": "woman", "Kind": "child"}
    verbs = {"läuft": "runs", "schläft": "sleeps", "spielt": "plays", "isst": "eats"}
    root.mkdir()
    for split, n in (("train", 120), ("val", 12)):
        pairs = [(rng.choice(list(nouns)), rng.choice(list(verbs))) for _ in range(n)]
        (root / f"{split}.de").write_text("".join(f"Ein {s} {v} .\n" for s, v in pairs), encoding="utf-8")
        (root / f"{split}.en").write_text("".join(f"A {nouns[s]} {verbs[v]} .\n" for s, v in pairs),
                                          encoding="utf-8")
    return root


def test_every_example_is_tested_and_documented():
    tested = set(re.findall(r'"(\w+\.py)"', Path(__file__).read_text(encoding="utf-8")))
    for path in EXAMPLES.glob("*.py"):
        assert path.name in tested, f"{path.name} has no test here"
        text = path.read_text(encoding="utf-8")
        assert text.startswith('"""') and "2 CPU cores" in text, f"{path.name}: docstring with its time"
        assert '"--quick"' in text, f"{path.name} takes no --quick"


def test_shakespeare_gpt_trains_samples_and_resumes(run_example, tmp_path):
    out = run_example("shakespeare_gpt.py", "--out", "run")
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert "top-k sampling" in out and "\nROMEO:" in out and "\nJULIET:" in out
    again = run_example("shakespeare_gpt.py", "--out", "run")  # resumes the finished run
    assert "\nROMEO:" in again


def test_architectures_trains_each_family(run_example, tmp_path):
    out = run_example("architectures.py", "--out", "archs")
    for arch in ("bigram", "lstm", "cnn", "gpt"):
        assert (tmp_path / "archs" / arch / "model.safetensors").is_file()
        losses = re.findall(rf"^\s*{arch}\s+[\d,]+\s+([\d.]+)\s", out, re.M)
        assert losses and 0 < float(losses[0]) < 5, out  # ln(69) = 4.23 at chance


def test_custom_loop_learns(run_example):
    out = run_example("custom_loop.py")
    val = [float(v) for v in re.findall(r"val loss ([\d.]+)", out)]
    assert len(val) == 5 and val[-1] < val[0] - 0.3, out
    assert "\nROMEO:" in out


def test_decoding_strategies(run_example):
    out = run_example("decoding.py", "--out", "run")
    for name in ("greedy", "temperature 1.5", "top-k 10", "top-p 0.9", "beam 3 of 5"):
        assert f"--- {name}" in out, out
    scores = [float(v) for v in re.findall(r"\) = +(-[\d.]+)$", out, re.M)]
    assert len(scores) == 3 and all(s < 0 for s in scores)


def test_sentiment_finetunes_and_predicts(run_example, tmp_path):
    out = run_example("sentiment.py", "--data", str(sst2_folder(tmp_path / "sst2")), "--out", "run")
    assert (tmp_path / "run" / "summary.json").is_file()
    predictions = re.findall(r"^\s*(negative|positive) \((0\.\d\d|1\.00)\)  a ", out, re.M)
    assert len(predictions) == 2, out


def test_newton_converges_in_a_few_steps(run_example):
    out = run_example("newton_logreg.py")
    newton = int(re.search(r"Newton (\d+) \(", out).group(1))
    assert newton <= 8, out  # quadratic convergence; gradient descent needs thousands
    assert "gradient descent (lr 1/L" in out


def test_translate_trains_translates_and_scores(run_example, tmp_path):
    data = parallel_folder(tmp_path / "pairs")
    out = run_example("translate.py", "--data", str(data), "--src", "de", "--tgt", "en", "--out", "run")
    assert out.count("translation:") == 3
    assert re.search(r"val: 12 sentences, beam 5: BLEU [\d.]+, chrF [\d.]+", out), out
