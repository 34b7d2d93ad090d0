"""Model FLOPs per token against hand counts; the matmul peak cache; the mfu column."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lmforge.config import ModelConfig, load_config
from lmforge.data.corpus import tokenize_corpus
from lmforge.models.build import build_model
from lmforge.tasks.lm import LanguageModelingTask
from lmforge.tokenizers import train_tokenizer
from lmforge.train import mfu
from lmforge.train.loop import Trainer


def gpt_by_hand(V: int, D: int, L: int, T: int, F: int) -> int:
    """Training FLOPs per token of a GPT-2-style model with biases and a tied head."""
    per_layer = (2 * D            # ln1 weight + bias
                 + 3 * D * D + 3 * D  # qkv
                 + D * D + D      # attention output projection
                 + 2 * D          # ln2
                 + D * F + F      # mlp fc
                 + F * D + D)     # mlp proj
    n = L * per_layer + 2 * D + V * D  # final LayerNorm; the tied head multiplies by V x D
    attention = L * (2 * D * T + 2 * D * T) * 3  # QK^T and AV, forward + 2x backward
    return 6 * n + attention


def test_tiny_gpt_matches_a_hand_count():
    m = build_model(ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, max_len=16))
    assert mfu.flops_per_token(m) == gpt_by_hand(50, 32, 2, 16, 128) == 174_720
    # a longer context only adds attention FLOPs
    assert mfu.flops_per_token(m, seq_len=64) - mfu.flops_per_token(m) == 2 * 12 * 32 * (64 - 16)


def test_untied_head_and_position_table():
    c = ModelConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=2, max_len=16, tie_embeddings=False)
    m = build_model(c)
    # the token table is now a pure lookup (left out), the separate head a 50 x 32 matmul
    assert mfu.matmul_params(m) == sum(p.numel() for p in m.parameters()) - 50 * 32 - 16 * 32
    assert len(mfu.lookup_only_embeddings(m)) == 2  # token table and position table


def test_lstm_is_6n_without_the_embedding():
    c = ModelConfig(arch="lstm", vocab_size=100, d_model=24, d_embed=16, n_layers=1, max_len=32,
                    tie_embeddings=False)
    m = build_model(c)
    E, H, V = 16, 24, 100
    lstm = 4 * H * E + 4 * H * H + 2 * 4 * H  # W_ih, W_hh, two biases
    head = V * H  # no bias on the LM head
    assert sum(p.numel() for p in m.parameters()) == V * E + lstm + head  # nothing else
    assert mfu.flops_per_token(m) == 6 * (lstm + head)  # the 100 x 16 table is a lookup
    assert mfu.attention_widths(m) == []


def test_mfu_formula():
    assert mfu.mfu(tokens_per_s=1000, flops_per_token=2e6, peak=4e9) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="peak must be positive"):
        mfu.mfu(1.0, 1.0, 0.0)


def test_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    calls = []

    def fake_measure(device, dtype=torch.float32, n=None, seconds=0.3):
        calls.append(dtype)
        return 1.5e11

    monkeypatch.setattr(mfu, "measure_peak", fake_measure)
    path = tmp_path / "peak.json"
    assert mfu.matmul_peak("cpu", "fp32", path) == 1.5e11
    assert mfu.matmul_peak("cpu", "fp32", path) == 1.5e11
    assert calls == [torch.float32]
    mfu.matmul_peak("cpu", "bf16", path)  # another dtype is another key
    assert calls == [torch.float32, torch.bfloat16]
    keys = json.loads(path.read_text())
    assert len(keys) == 2 and all(f"threads={torch.get_num_threads()}" in k for k in keys)
    path.write_text("{not json")  # damaged: measured again and rewritten
    assert mfu.matmul_peak("cpu", "fp32", path) == 1.5e11 and len(calls) == 3
    with pytest.raises(ValueError, match="precision must be one of"):
        mfu.matmul_peak("cpu", "fp8", path)


def test_measure_peak_is_plausible():
    peak = mfu.measure_peak(torch.device("cpu"), n=128, seconds=0.05)
    assert 1e7 < peak < 1e14  # FLOP/s of any CPU


def test_trainer_logs_mfu_from_the_hand_count(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    peak = 2.0e10
    key = mfu.peak_key(torch.device("cpu"), "fp32")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "peak.json").write_text(json.dumps({key: peak}))
    cfg = load_config(None, ["model.d_model=32", "model.n_layers=2", "model.n_heads=2",
                             "model.max_len=16", "train.max_steps=4", "train.log_every=2",
                             "train.eval_every=0", "train.progress=false", "train.batch_size=4"])
    tok = train_tokenizer("char", [tiny_corpus.read_text()])
    corpus = tokenize_corpus([tiny_corpus], tok, 0.1, cache_dir=tmp_path / "corpus")
    cfg.model.vocab_size = tok.vocab_size
    model = build_model(cfg.model)
    task = LanguageModelingTask(model, tok, corpus.train, corpus.val, 16, 4, sample_tokens=0)
    run = tmp_path / "run"
    run.mkdir()
    Trainer(task, cfg.train, run, log=lambda *a: None).fit()
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r["split"] == "train"]
    assert len(rows) == 2
    hand = gpt_by_hand(tok.vocab_size, 32, 2, 16, 128)
    for r in rows:
        assert float(r["mfu"]) == pytest.approx(float(r["tokens_per_s"]) * hand / peak, rel=1e-4)
