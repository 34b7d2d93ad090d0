"""The one loop: exact resume, interruption, divergence, corrupted checkpoints."""

from __future__ import annotations

import csv
import os
import signal

import pytest
import torch

from lmforge.config import load_config
from lmforge.data.corpus import tokenize_corpus
from lmforge.models.build import build_model
from lmforge.tasks.lm import LanguageModelingTask
from lmforge.tokenizers import train_tokenizer
from lmforge.train.checkpoint import CheckpointError, load_trainer_state
from lmforge.train.loop import Trainer, TrainingDiverged


def make_trainer(corpus_path, run_dir, resume=False, overrides=()):
    cfg = load_config(None, ["model.d_model=32", "model.n_layers=2", "model.n_heads=2",
                             "model.max_len=16", "model.dropout=0.1", "train.batch_size=4",
                             "train.max_steps=20", "train.eval_every=10", "train.log_every=1",
                             "train.eval_batches=2", "train.warmup_steps=3", "train.progress=false",
                             "train.sample_tokens=0", "train.grad_accum=2", *overrides])
    text = corpus_path.read_text()
    tok = train_tokenizer("char", [text])
    corpus = tokenize_corpus([corpus_path], tok, 0.1, cache_dir=run_dir.parent / "cache")
    cfg.model.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg.model)
    task = LanguageModelingTask(model, tok, corpus.train, corpus.val, 16, 4, seed=1,
                                eval_batches=2, tbptt=cfg.train.tbptt, sample_tokens=0)
    run_dir.mkdir(exist_ok=True)
    return Trainer(task, cfg.train, run_dir, resume=resume, log=lambda *a: None)


def train_losses(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "train"}


def test_resume_is_exact(tiny_corpus, tmp_path):
    straight = make_trainer(tiny_corpus, tmp_path / "straight")
    straight.fit()
    stopped = make_trainer(tiny_corpus, tmp_path / "stopped")
    stopped.fit(until_step=10)
    resumed = make_trainer(tiny_corpus, tmp_path / "stopped", resume=True)
    assert resumed.step == 10
    resumed.fit()
    a, b = train_losses(tmp_path / "straight"), train_losses(tmp_path / "stopped")
    assert sorted(a) == sorted(b) == list(range(1, 21))
    for step in a:
        assert abs(a[step] - b[step]) < 1e-6, step
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


def test_ctrl_c_checkpoints_at_a_step_boundary_and_resumes_exactly(tiny_corpus, tmp_path):
    straight = make_trainer(tiny_corpus, tmp_path / "straight", overrides=["train.tbptt=false"])
    straight.fit()
    run = tmp_path / "killed"
    trainer = make_trainer(tiny_corpus, run)
    real_next = trainer.task.next_batch
    calls = {"n": 0}

    def next_batch():
        calls["n"] += 1
        if calls["n"] == 2 * 13 + 1:  # mid-way through step 14 (two micro-batches a step)
            os.kill(os.getpid(), signal.SIGINT)
        return real_next()

    trainer.task.next_batch = next_batch
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_trainer_state(run)["step"] == 14
    resumed = make_trainer(tiny_corpus, run, resume=True)
    resumed.fit()
    a, b = train_losses(tmp_path / "straight"), train_losses(run)
    for step in range(1, 21):
        assert abs(a[step] - b[step]) < 1e-6, step


def test_tbptt_resume_is_exact(tiny_corpus, tmp_path):
    over = ["train.tbptt=true"]
    make_trainer(tiny_corpus, tmp_path / "a", overrides=over).fit()
    make_trainer(tiny_corpus, tmp_path / "b", overrides=over).fit(until_step=10)
    make_trainer(tiny_corpus, tmp_path / "b", resume=True, overrides=over).fit()
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert all(abs(a[s] - b[s]) < 1e-6 for s in a)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_corpus, tmp_path):
    run = tmp_path / "nan"
    trainer = make_trainer(tiny_corpus, run)
    trainer.fit(until_step=10)
    good = (run / "model.safetensors").read_bytes()
    real_loss = trainer.task.loss

    def bad_loss(batch, model=None):
        return real_loss(batch, model) * float("nan") if trainer.step >= 12 else real_loss(batch, model)

    trainer.task.loss = bad_loss
    with pytest.raises(TrainingDiverged, match="at step 13"):
        trainer.fit()
    assert (run / "model.safetensors").read_bytes() == good
    assert load_trainer_state(run)["step"] == 10


def test_corrupted_checkpoint_is_detected(tiny_corpus, tmp_path):
    run = tmp_path / "c"
    make_trainer(tiny_corpus, run).fit(until_step=10)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(CheckpointError, match="does not match trainer_state.pt"):
        make_trainer(tiny_corpus, run, resume=True)
    (run / "trainer_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupted or unsafe trainer state"):
        make_trainer(tiny_corpus, run, resume=True)


def test_kill_between_renames_rolls_forward(tiny_corpus, tmp_path):
    run = tmp_path / "r"
    trainer = make_trainer(tiny_corpus, run)
    trainer.fit(until_step=10)
    new_weights = (run / "model.safetensors").read_bytes()
    # simulate: trainer_state.pt renamed, model.safetensors.tmp not yet renamed
    (run / "model.safetensors.tmp").write_bytes(new_weights)
    (run / "model.safetensors").write_bytes(b"old weights of an earlier checkpoint")
    state = load_trainer_state(run)
    assert state["step"] == 10
    assert (run / "model.safetensors").read_bytes() == new_weights


def test_every_optimizer_name_runs_in_the_loop(tiny_corpus, tmp_path):
    for name in ("gd", "sgd", "rmsprop", "adagrad", "adam", "adamw", "lbfgs"):
        trainer = make_trainer(tiny_corpus, tmp_path / name,
                               overrides=[f"train.optimizer={name}", "train.max_steps=3",
                                          "train.lr=0.01", "train.momentum=0.9"])
        trainer.fit()
        assert trainer.step == 3
