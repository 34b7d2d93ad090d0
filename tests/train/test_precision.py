"""Mixed precision: bf16 autocast tracks fp32; fp16 needs CUDA (gradient scaler); threads;
torch.compile."""

from __future__ import annotations

import csv

import pytest
import torch

from lmforge.config import ConfigError, load_config
from lmforge.data.corpus import tokenize_corpus
from lmforge.models.build import build_model
from lmforge.tasks.lm import LanguageModelingTask
from lmforge.tokenizers import train_tokenizer
from lmforge.train.loop import Trainer, autocast_context


def run(corpus_path, run_dir, *overrides: str) -> Trainer:
    cfg = load_config(None, ["model.d_model=48", "model.n_layers=2", "model.n_heads=4",
                             "model.max_len=32", "model.dropout=0.0", "train.batch_size=8",
                             "train.max_steps=50", "train.eval_every=0", "train.log_every=1",
                             "train.warmup_steps=5", "train.lr=3e-3", "train.progress=false",
                             *overrides])
    tok = train_tokenizer("char", [corpus_path.read_text()])
    corpus = tokenize_corpus([corpus_path], tok, 0.1, cache_dir=run_dir.parent / "cache")
    cfg.model.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg.model).to(cfg.train.device if cfg.train.device != "auto" else "cpu")
    task = LanguageModelingTask(model, tok, corpus.train, corpus.val, 32, 8, seed=3,
                                sample_tokens=0, device=next(model.parameters()).device)
    run_dir.mkdir()
    trainer = Trainer(task, cfg.train, run_dir, log=lambda *a: None)
    trainer.fit()
    return trainer


def losses(run_dir) -> dict[int, float]:
    with open(run_dir / "metrics.csv") as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "train"}


def test_bf16_tracks_fp32_on_cpu(tiny_corpus, tmp_path):
    run(tiny_corpus, tmp_path / "fp32", "train.device=cpu")
    run(tiny_corpus, tmp_path / "bf16", "train.device=cpu", "train.precision=bf16")
    a, b = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert a[50] < 0.8 * a[1]  # it learned something, so the comparison means something
    assert abs(b[50] - a[50]) / a[50] < 0.02, (a[50], b[50])
    assert a[1] != b[1]  # bf16 really ran in bf16 (otherwise both curves would be identical)


def test_autocast_context_runs_matmuls_in_bf16():
    x = torch.randn(4, 8)
    with autocast_context(torch.device("cpu"), "bf16"):
        assert (x @ x.T).dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), "fp32"):
        assert (x @ x.T).dtype == torch.float32


def test_fp16_on_cpu_is_a_one_line_error(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="train.precision=fp16 needs a CUDA device .* use bf16"):
        run(tiny_corpus, tmp_path / "fp16", "train.device=cpu", "train.precision=fp16")


def test_threads_setting_is_applied(tiny_corpus, tmp_path):
    before = torch.get_num_threads()
    try:
        run(tiny_corpus, tmp_path / "t1", "train.device=cpu", "train.threads=1", "train.max_steps=1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a gradient scaler needs CUDA")
def test_fp16_with_grad_scaler_tracks_fp32_on_cuda(tiny_corpus, tmp_path):
    run(tiny_corpus, tmp_path / "c32", "train.device=cuda")
    trainer = run(tiny_corpus, tmp_path / "c16", "train.device=cuda", "train.precision=fp16")
    assert trainer.scaler is not None and trainer.scaler.get_scale() > 0
    a, b = losses(tmp_path / "c32"), losses(tmp_path / "c16")
    assert abs(b[50] - a[50]) / a[50] < 0.02, (a[50], b[50])


@pytest.mark.parametrize("bf16_speedup, expected", [(4.0, "bf16"), (1.2, "fp32")])
def test_auto_precision_picks_bf16_only_where_it_is_fast(tmp_path, monkeypatch, bf16_speedup,
                                                          expected):
    import json

    from lmforge.train import mfu
    from lmforge.train.loop import resolve_precision

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    cpu = torch.device("cpu")
    (tmp_path / "peak.json").write_text(json.dumps({mfu.peak_key(cpu, "fp32"): 1e11,
                                                    mfu.peak_key(cpu, "bf16"): bf16_speedup * 1e11}))
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("fp32", cpu) == "fp32"  # explicit choices pass through


def test_auto_precision_trains_with_the_chosen_precision(tiny_corpus, tmp_path, monkeypatch):
    import json

    from lmforge.train import mfu

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    cpu = torch.device("cpu")
    (tmp_path / "peak.json").write_text(json.dumps({mfu.peak_key(cpu, "fp32"): 1e11,
                                                    mfu.peak_key(cpu, "bf16"): 4e11}))
    trainer = run(tiny_corpus, tmp_path / "auto", "train.device=cpu", "train.precision=auto",
                  "train.max_steps=5")
    assert trainer.cfg.precision == "bf16"
    run(tiny_corpus, tmp_path / "bf16", "train.device=cpu", "train.precision=bf16",
        "train.max_steps=5")
    assert losses(tmp_path / "auto") == losses(tmp_path / "bf16")  # the same run, step for step


def test_compiled_training_follows_the_eager_run(tiny_corpus, tmp_path, monkeypatch):
    """train.compile=true wraps the model in torch.compile; the tasks must accept the wrapper
    (not the model's own class: even `bool(wrapper)` raises)."""
    import functools

    # the "eager" backend keeps the wrapper and dynamo's tracing but skips C++ code generation,
    # so the test is quick and the numbers must equal the uncompiled run
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    trainer = run(tiny_corpus, tmp_path / "compiled", "train.device=cpu", "train.compile=true",
                  "train.max_steps=5")
    assert type(trainer.train_model).__name__ == "OptimizedModule"
    run(tiny_corpus, tmp_path / "eager", "train.device=cpu", "train.max_steps=5")
    a, b = losses(tmp_path / "compiled"), losses(tmp_path / "eager")
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a), (a, b)
