"""The command line end to end on a tiny corpus, and its one-line errors."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from lmforge.cli import main

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.max_len=32",
        "train.batch_size=8", "train.max_steps=40", "train.eval_every=20", "train.eval_batches=2",
        "train.progress=false", "train.sample_tokens=20", "train.warmup_steps=5"]


def pretrain(tmp_path, corpus, out="run", extra=()):
    return main(["pretrain", "--data", str(corpus), "--out", str(tmp_path / out),
                 f"data.cache_dir={tmp_path / 'cache'}", *TINY, *extra])


def test_pretrain_then_generate(tmp_path, tiny_corpus, capsys):
    assert pretrain(tmp_path, tiny_corpus) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "model_config.json", "tokenizer.json", "model.safetensors",
                 "trainer_state.pt", "metrics.csv", "samples.txt", "plots/loss.png"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert {"step", "split", "loss", "lr", "tokens_per_s", "elapsed_s"} <= set(rows[0])
    val = [float(r["loss"]) for r in rows if r["split"] == "val"]
    assert val[-1] < val[0]  # it learns
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "ROMEO:", "--max-new-tokens", "30",
                 "--temperature", "0.8", "--top-k", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out) > 30


def test_resume_continues_and_checks_architecture(tmp_path, tiny_corpus, capsys):
    assert pretrain(tmp_path, tiny_corpus) == 0
    run = tmp_path / "run"
    assert main(["pretrain", "--resume", str(run), "train.max_steps=60"]) == 0
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert max(steps) == 60
    assert main(["pretrain", "--resume", str(run), "model.n_layers=3"]) == 1
    err = capsys.readouterr().err
    assert "model.n_layers=3 differs from the run's 2" in err


def test_existing_run_is_never_overwritten(tmp_path, tiny_corpus, capsys):
    assert pretrain(tmp_path, tiny_corpus) == 0
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    assert pretrain(tmp_path, tiny_corpus) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("setup, args, message", [
    ("missing", [], "does not exist"),
    ("empty", [], "empty"),
    ("short", [], "fewer than one context window"),
    ("binary", [], "not valid UTF-8"),
    ("ok", ["model.n_heads=3"], "n_heads=3 does not divide model.d_model=32"),
    ("ok", ["model.n_layer=3"], "did you mean 'n_layers'"),
    ("ok", ["train.lr=fast"], "train.lr must be a number"),
])
def test_bad_input_gives_one_line_error(tmp_path, tiny_corpus, capsys, setup, args, message):
    corpus = {"missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt",
              "short": tmp_path / "short.txt", "binary": tmp_path / "bin.txt",
              "ok": tiny_corpus}[setup]
    if setup == "empty":
        corpus.write_text("")
    if setup == "short":
        corpus.write_text("hello there\n")
    if setup == "binary":
        corpus.write_bytes(b"good text\n" * 100 + b"\xff\xfe bad bytes\n")
    assert pretrain(tmp_path, corpus, extra=args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error:") and message in err
    assert len(err.splitlines()) == 1


def test_non_utf8_opt_in_replacement(tmp_path, capsys):
    corpus = tmp_path / "bin.txt"
    corpus.write_bytes(b"good text, more good text\n" * 100 + b"\xff\xfe bad bytes\n")
    assert pretrain(tmp_path, corpus, extra=["data.errors=replace", "train.max_steps=2"]) == 0


def test_generate_without_weights_is_an_error(tmp_path, tiny_corpus, capsys):
    assert pretrain(tmp_path, tiny_corpus) == 0
    (tmp_path / "run" / "model.safetensors").unlink()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "a"]) == 1
    assert "no weights" in capsys.readouterr().err


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "lmforge", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "pretrain" in out.stdout
