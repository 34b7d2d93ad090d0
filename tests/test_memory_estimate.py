"""`lmforge estimate-memory` and the start-up check: exact counts, traced activations equal a
full model's, techniques shrink their rows, and a run that will not fit is refused early."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.config import ConfigError, ModelConfig, TrainConfig
from lmforge.memory import check
from lmforge.memory.estimate import estimate_memory
from lmforge.memory.trace import _saved_bytes
from lmforge.models.build import build_model, count_parameters
from lmforge.nn.lora import apply_lora, lora_parameters, mark_only_lora_trainable
from lmforge.nn.quant import int8_bytes_saved, quantize_frozen_base

CFG = ModelConfig(arch="gpt", vocab_size=300, d_model=32, n_layers=4, n_heads=4, max_len=16)


def test_weights_gradients_and_optimizer_state_are_exact():
    n = count_parameters(build_model(CFG))
    est = estimate_memory(CFG, TrainConfig(), batch=2, seq=16)
    assert est.get("weights") == est.get("gradients") == 4 * n
    assert est.get("optimizer state") == 2 * 4 * n  # AdamW: two moments
    assert estimate_memory(CFG, TrainConfig(optimizer="gd"), 2, 16).get("optimizer state") == 0
    # starting from a weights file: load_weights holds the file's tensors and the model at once
    loaded = estimate_memory(CFG, TrainConfig(), 2, 16, runtime_bytes=100, loads_weights=True)
    assert est.phases["loading"] == 4 * n and loaded.phases["loading"] == 100 + 8 * n

    lora = {"rank": 4, "alpha": 8.0, "targets": []}
    model = build_model(CFG)
    apply_lora(model.backbone, rank=4, alpha=8.0)
    mark_only_lora_trainable(model)
    adapters = sum(p.numel() for p in lora_parameters(model))
    est = estimate_memory(CFG, TrainConfig(), 2, 16, mode="lora", lora=lora)
    assert est.get("gradients") == 4 * adapters and est.get("optimizer state") == 8 * adapters
    int8 = estimate_memory(CFG, TrainConfig(base_dtype="int8"), 2, 16, mode="lora", lora=lora)
    quantize_frozen_base(model)
    assert est.get("weights") - int8.get("weights") == int8_bytes_saved(model)


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_activations_equal_what_the_full_model_saves(arch):
    cfg = ModelConfig(arch=arch, vocab_size=300, d_model=32, n_layers=5, n_heads=4, max_len=24,
                      dropout=0.1, **({"n_kv_heads": 2} if arch == "llama" else {}))
    est = estimate_memory(cfg, TrainConfig(), batch=3, seq=24)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    measured = _saved_bytes(model, torch.randint(1, 300, (3, 24)), "fp32")
    assert est.get("activations") == pytest.approx(measured, rel=0.02)


def test_checkpointing_and_chunked_ce_shrink_their_rows():
    big = ModelConfig(arch="gpt", vocab_size=5000, d_model=32, n_layers=6, n_heads=4, max_len=64)
    plain = estimate_memory(big, TrainConfig(), batch=4, seq=64)
    ac = estimate_memory(big, TrainConfig(activation_checkpointing=True), 4, 64)
    every3 = estimate_memory(big, TrainConfig(activation_checkpointing=True, checkpoint_every=3),
                             4, 64)
    cce = estimate_memory(big, TrainConfig(chunked_ce=True, ce_chunk_size=32), 4, 64)
    assert ac.get("activations") < every3.get("activations") < plain.get("activations")
    assert plain.get("logits / loss") == 4 * 64 * 5000 * 12  # logits, log-softmax, 2 gradients
    assert cce.get("logits / loss") < plain.get("logits / loss") / 5
    assert cce.peak < plain.peak and "peak (predicted)" in plain.table()


def test_check_fits_refuses_a_run_that_does_not_fit(monkeypatch):
    monkeypatch.setattr(check, "available_bytes", lambda device: 1.0)
    with pytest.raises(ConfigError, match=r"needs about .* at its peak .* train.activation_checkpointing=true"):
        check.check_fits(CFG, TrainConfig(), torch.device("cpu"))
    assert check.check_fits(CFG, TrainConfig(check_memory=False), torch.device("cpu")) is None
    monkeypatch.setattr(check, "available_bytes", lambda device: 1e12)
    assert check.check_fits(CFG, TrainConfig(), torch.device("cpu")).peak > 0


def test_pretrain_refuses_before_creating_the_run(monkeypatch, tmp_path, tiny_corpus, capsys):
    monkeypatch.setattr(check, "available_bytes", lambda device: 1.0)
    out = tmp_path / "run"
    code = main(["pretrain", "--data", str(tiny_corpus), "--out", str(out),
                 f"data.cache_dir={tmp_path / 'cache'}", "model.d_model=32", "model.n_layers=2",
                 "model.n_heads=2", "model.max_len=16", "train.progress=false"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("lmforge: error: this run needs about")
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_cli_prints_the_table_and_names_bad_input(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_config.json").write_text(json.dumps(
        {"arch": "llama", "vocab_size": 500, "d_model": 32, "n_layers": 2, "n_heads": 4,
         "n_kv_heads": 2, "max_len": 64}))
    assert main(["estimate-memory", str(run), "--batch", "2", "--seq", "32", "--mode", "lora",
                 "train.chunked_ce=true", "train.activation_checkpointing=true"]) == 0
    out = capsys.readouterr().out
    for row in ("weights", "optimizer state", "activations", "logits / loss", "peak (predicted)"):
        assert row in out
    assert "chunked CE on" in out and "| lora |" in out
    assert main(["estimate-memory", str(tmp_path / "nowhere")]) == 1
    assert "neither a run directory nor a config file" in capsys.readouterr().err
    assert main(["estimate-memory", str(run), "train.checkpoint_every=0"]) == 1
    assert "train.checkpoint_every must be >= 1" in capsys.readouterr().err
