"""The recipe scaffold: a bad config creates nothing, --out is never overwritten, one command
per run directory, a failed --resume changes no byte, a failure cleans up after itself."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.recipes.scaffold import LOCK, RunDir

TINY = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.max_len=16",
        "train.max_steps=4", "train.eval_every=2", "train.eval_batches=1", "train.log_every=2",
        "train.batch_size=4", "train.warmup_steps=0", "train.progress=false", "train.threads=1",
        "train.sample_tokens=8"]


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    monkeypatch.setattr("lmforge.train.loop.plot_metrics", lambda run_dir: None)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pretrain(corpus: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "--data", str(corpus), "--out", str(out), *TINY, *extra])


@pytest.mark.parametrize("bad, named", [
    ("train.lr=-1", "train.lr"), ("train.optimizer=foo", "train.optimizer"),
    ("train.precision=fp16", "fp16"), ("train.log_every=0", "train.log_every"),
    ("train.eval_batches=0", "train.eval_batches"), ("model.n_heads=0", "model.n_heads"),
    pytest.param("train.device=cuda", "cuda", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="this machine has CUDA")),
])
def test_a_bad_config_creates_nothing(tiny_corpus, tmp_path, capsys, bad, named):
    out = tmp_path / "run"
    assert pretrain(tiny_corpus, out, bad) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error:") and named in err and "\n" not in err
    assert not out.exists()


def test_out_that_is_a_file_or_a_run_is_never_overwritten(tiny_corpus, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    assert pretrain(tiny_corpus, file) == 1
    assert "existing file" in capsys.readouterr().err and file.read_text() == "mine"
    run = tmp_path / "run"
    assert pretrain(tiny_corpus, run) == 0
    before = digest(run)
    assert pretrain(tiny_corpus, run) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert digest(run) == before and not (run / LOCK).exists()


def test_a_live_lock_refuses_a_stale_one_is_taken_over(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        assert pretrain(tiny_corpus, out) == 1
        err = capsys.readouterr().err.strip()
        assert f"in use by another lmforge command (pid {sleeper.pid}" in err and "\n" not in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing else was created
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is gone: its lock is stale and taken over
    assert pretrain(tiny_corpus, out) == 0
    assert (out / "model.safetensors").is_file() and not (out / LOCK).exists()


def test_a_failed_resume_leaves_every_byte(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(tiny_corpus, run) == 0
    before = digest(run)
    # nothing left to do (max_steps at the current step): said, exit 0, no byte changed
    assert main(["pretrain", "--resume", str(run), "train.max_steps=4"]) == 0
    out = capsys.readouterr().out
    assert "already at step 4" in out and "nothing to do" in out
    assert digest(run) == before
    # a corrupt trainer state, then truncated weights
    for name, cut in (("trainer_state.pt", 100), ("model.safetensors", 50)):
        saved = (run / name).read_bytes()
        (run / name).write_bytes(saved[:cut])
        corrupted = digest(run)
        assert main(["pretrain", "--resume", str(run), "train.max_steps=8"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("lmforge: error:") and "\n" not in err
        assert digest(run) == corrupted
        (run / name).write_bytes(saved)
    assert digest(run) == before


def test_resume_removes_orphan_tmp_files_and_continues(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    assert pretrain(tiny_corpus, run) == 0
    (run / "metrics.csv.tmp").write_text("half")
    (run / "config.yaml.tmp").write_text("half")
    assert main(["pretrain", "--resume", str(run), "train.max_steps=6"]) == 0
    assert not list(run.glob("*.tmp")) and not (run / LOCK).exists()


def test_a_failure_removes_only_what_this_command_created(tiny_corpus, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("failed while building the trainer")

    monkeypatch.setattr("lmforge.train.loop.Trainer.__init__", boom)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        pretrain(tiny_corpus, fresh)
    assert not fresh.exists()  # this command made the folder: it is gone
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "README.txt").write_text("the user's")
    with pytest.raises(RuntimeError):
        pretrain(tiny_corpus, existing)
    assert [p.name for p in existing.iterdir()] == ["README.txt"]
    assert (existing / "README.txt").read_text() == "the user's"


def test_run_dir_refuses_when_held_by_this_very_process(tmp_path):
    with RunDir(tmp_path / "run"):
        with pytest.raises(Exception, match="in use"):
            RunDir(tmp_path / "run").__enter__()
    assert not (tmp_path / "run" / LOCK).exists()
