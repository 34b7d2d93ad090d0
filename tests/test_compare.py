"""The architecture arena: budgets, sizing, per-arch recipes, and one tiny end-to-end arena."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from lmforge.compare import (ARCH_DEFAULTS, CSV_COLUMNS, Budget, apply_budget, arch_config, cli,
                             compare, parse_budget, parse_count, split_overrides)
from lmforge.config import ConfigError
from lmforge.models.build import build_model, count_parameters

QUIET = ["train.eval_batches=2", "train.sample_tokens=0"]


def _arch_cfg(arch, tmp_path, params=200_000, overrides=(), tbptt=True, vocab=65):
    common = {"data": {"val_fraction": 0.1}, "train": {"threads": 1, "progress": False}}
    return arch_config(arch, data="x.txt", out=tmp_path, tokenizer_path=tmp_path / "t.json",
                       vocab_size=vocab, params=params, context=64, batch_size=8, tbptt=tbptt,
                       overrides=list(overrides), common=common)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, kind, value", [
    ("5m", "time", 300), ("90s", "time", 90), ("1.5h", "time", 5400), ("0.5m", "time", 30),
    ("2M-tokens", "tokens", 2_000_000), ("500K-tokens", "tokens", 500_000),
    ("1000-tokens", "tokens", 1000), ("1.5m-tokens", "tokens", 1_500_000),
])
def test_budget_parsing(text, kind, value):
    assert parse_budget(text) == Budget(kind, value)


@pytest.mark.parametrize("bad", ["5x", "", "tokens", "0s", "-5m", "2M", "5 minutes", "M-tokens",
                                 "2Q-tokens", "0-tokens"])
def test_bad_budgets_are_one_line_errors_naming_the_value(bad):
    with pytest.raises(ConfigError) as err:
        parse_budget(bad)
    message = str(err.value)
    assert "\n" not in message and repr(bad) in message and "2M-tokens" in message


def test_param_counts_parse():
    assert parse_count("1M") == 1_000_000 and parse_count("200K") == 200_000
    assert parse_count("1.5m") == 1_500_000 and parse_count("5000") == 5000
    for bad in ("lots", "0", "-1M", "1X"):
        with pytest.raises(ConfigError, match="--params"):
            parse_count(bad)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from lmforge.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" * 50)
    assert main(["compare", "--archs", "lstm", "--data", str(corpus), "--budget", "5x",
                 "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'5x'" in err
    with pytest.raises(ConfigError, match="'transformer' is not an arena architecture"):
        cli(["--archs", "lstm,transformer", "--data", str(corpus), "--budget", "1K-tokens"])
    with pytest.raises(ConfigError, match="gru"):
        split_overrides(["gru:train.lr=1e-3"], ["lstm", "gpt"])


# --------------------------------------------------------------------------- per-arch configs


@pytest.mark.parametrize("arch", ["mlp", "rnn", "lstm", "gru", "cnn", "rcnn", "gpt"])
def test_each_family_is_sized_to_the_budget(arch, tmp_path):
    cfg, _ = _arch_cfg(arch, tmp_path, params=200_000)
    real = count_parameters(build_model(cfg.model))
    assert abs(real - 200_000) <= 0.15 * 200_000, f"{arch}: {real:,}"
    assert cfg.model.max_len == 64 and cfg.train.batch_size == 8


def test_bigram_keeps_the_full_table(tmp_path):
    cfg, _ = _arch_cfg("bigram", tmp_path, params=1_000_000, vocab=30)
    assert cfg.model.d_model == 30  # V x V is all a bigram can use, whatever --params says


def test_recurrent_archs_default_to_tbptt_and_can_turn_it_off(tmp_path):
    for arch in ("rnn", "lstm", "gru", "rcnn"):
        assert _arch_cfg(arch, tmp_path, params=20_000)[0].train.tbptt
        assert not _arch_cfg(arch, tmp_path, params=20_000, tbptt=False)[0].train.tbptt
    for arch in ("mlp", "cnn", "gpt"):
        assert not _arch_cfg(arch, tmp_path, params=20_000)[0].train.tbptt


def test_each_family_has_its_own_lr_and_overrides_win(tmp_path):
    lstm, _ = _arch_cfg("lstm", tmp_path, params=20_000)
    gpt, _ = _arch_cfg("gpt", tmp_path, params=20_000)
    assert lstm.train.lr != gpt.train.lr and lstm.train.min_lr == pytest.approx(lstm.train.lr / 10)
    per_arch = split_overrides(["lstm:train.lr=3e-3", "train.weight_decay=0.05"], ["lstm", "gpt"])
    lstm, _ = _arch_cfg("lstm", tmp_path, params=20_000, overrides=per_arch["lstm"])
    gpt, _ = _arch_cfg("gpt", tmp_path, params=20_000, overrides=per_arch["gpt"])
    assert lstm.train.lr == 3e-3 and lstm.train.min_lr == pytest.approx(3e-4)
    assert gpt.train.lr == ARCH_DEFAULTS["gpt"]["train"]["lr"] and lstm.train.weight_decay == gpt.train.weight_decay == 0.05
    fixed, _ = _arch_cfg("gru", tmp_path, params=20_000, overrides=["model.d_model=33"])
    assert fixed.model.d_model == 33  # an explicit width is not resized


def test_budgets_become_steps(tmp_path):
    cfg, given = _arch_cfg("gpt", tmp_path, params=20_000)
    apply_budget(cfg, parse_budget("64K-tokens"), given, None)
    assert cfg.train.max_steps == math.ceil(64_000 / (8 * 64)) == 125
    assert cfg.train.eval_every == 12 and cfg.train.time_budget_s == 0
    cfg, given = _arch_cfg("gpt", tmp_path, params=20_000)
    apply_budget(cfg, parse_budget("90s"), given, step_seconds=0.01)
    assert cfg.train.time_budget_s == 90 and cfg.train.max_steps == 9000  # decays by the end
    assert cfg.train.eval_every == 900 and cfg.train.warmup_steps == 100


# --------------------------------------------------------------------------- end to end


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def test_arena_end_to_end_on_a_tokens_budget(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "arena"
    rows = compare(["bigram", "lstm", "gpt"], tiny_corpus, "2K-tokens", "5K", out, context=16,
                   batch_size=4, threads=1, progress=False, overrides=QUIET + ["train.eval_every=16"])
    # 2,000 tokens / (4 x 16) per step = 32 steps for everyone
    assert [r["arch"] for r in rows] == ["bigram", "lstm", "gpt"]
    assert all(r["steps"] == 32 for r in rows)
    header, csv_rows = _read_csv(out / "compare.csv")
    assert header == CSV_COLUMNS
    assert [r["arch"] for r in csv_rows] == ["bigram", "lstm", "gpt"]
    for row in csv_rows:
        assert int(row["params"]) > 0 and float(row["tokens_per_s"]) > 0
        assert float(row["val_ppl"]) == pytest.approx(math.exp(float(row["best_val_loss"])), rel=1e-3)
        assert 0 < float(row["best_val_loss"]) < math.log(40)  # learned something
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for arch in ("bigram", "lstm", "gpt"):
        run = out / arch
        for name in ("config.yaml", "model_config.json", "tokenizer.json", "model.safetensors",
                     "metrics.csv"):
            assert (run / name).is_file(), f"{arch}: {name}"
        assert (run / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()
    assert len(list((out / ".cache").iterdir())) == 1  # tokenized once, shared by every run
    printed = capsys.readouterr().out
    assert "best val loss" in printed and "lstm" in printed

    from lmforge.run import load_run  # each arena run is a normal run directory

    text = load_run(out / "lstm", device="cpu").generate("ROMEO", max_new_tokens=5, seed=0)
    assert isinstance(text, str)
    with pytest.raises(ConfigError, match="already holds a run"):
        compare(["lstm"], tiny_corpus, "2K-tokens", "5K", out, context=16, batch_size=4)


def test_arena_on_a_wall_time_budget(tiny_corpus, tmp_path):
    out = tmp_path / "arena"
    (row,) = compare(["bigram"], tiny_corpus, "2s", "5K", out, context=16, batch_size=4,
                     threads=1, progress=False, overrides=QUIET + ["train.eval_every=1000000"])
    assert 0 < row["wall_s"] <= 2.5  # stopped by the time cap or the probed step count
    _, csv_rows = _read_csv(out / "compare.csv")
    assert len(csv_rows) == 1 and (out / "compare.png").is_file()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step_probe_runs_in_the_runs_precision(tmp_path, monkeypatch, precision):
    # the probe sets max_steps for a time budget: an fp32 probe of a bf16 run would plan far
    # too few steps (a 5-minute bf16 GPT once finished its schedule in 122 s)
    from lmforge.compare import measure_step_seconds
    from lmforge.train import loop

    seen = []
    real = loop.autocast_context

    def recording(device, chosen):
        seen.append(chosen)
        return real(device, chosen)

    monkeypatch.setattr(loop, "autocast_context", recording)
    cfg, _ = _arch_cfg("gpt", tmp_path, params=20_000, overrides=[f"train.precision={precision}"])
    assert measure_step_seconds(cfg, torch.device("cpu"), seconds=0.05, max_steps=3) > 0
    assert seen == [precision]
