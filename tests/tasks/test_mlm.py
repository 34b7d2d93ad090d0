"""Masked-LM task: the 15 % / 80-10-10 corruption, specials never masked, exact resume, the
recipe learning on a toy corpus, `lmforge evaluate` on the result, and bad setups."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.cli import main
from lmforge.config import ConfigError, ModelConfig, load_config
from lmforge.models.build import build_model
from lmforge.models.heads import IGNORE_INDEX
from lmforge.pretrain import pretrain
from lmforge.tasks.mlm import MaskedLMTask, mask_tokens
from lmforge.tokenizers import train_tokenizer

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "bert-mlm.yaml"
MASK = 6


def test_corruption_proportions_and_specials():
    V = 500
    special = torch.zeros(V, dtype=torch.bool)
    special[:7] = True  # <pad> <unk> <bos> <eos> [CLS] [SEP] [MASK]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, V, (64, 512), generator=g)
    ids[:, 0], ids[:, -1], ids[:, 100] = 4, 5, 3  # [CLS] ... <eos> ... [SEP]
    inputs, targets = mask_tokens(ids, MASK, special, torch.Generator().manual_seed(1))
    chosen = targets != IGNORE_INDEX
    assert not chosen[special[ids]].any()  # specials are never predicted
    torch.testing.assert_close(targets[chosen], ids[chosen])
    torch.testing.assert_close(inputs[~chosen], ids[~chosen])  # unchosen tokens untouched
    eligible = (~special[ids]).sum().item()
    assert abs(chosen.sum().item() / eligible - 0.15) < 0.005
    n = chosen.sum().item()
    masked = (inputs[chosen] == MASK).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1 - 0.1 / (V - 7)) < 0.01
    replaced = inputs[chosen & (inputs != MASK) & (inputs != ids)]
    assert abs(len(replaced) / n - 0.1) < 0.01 and not special[replaced].any()
    again, _ = mask_tokens(ids, MASK, special, torch.Generator().manual_seed(1))
    torch.testing.assert_close(inputs, again)  # reproducible from the generator


def test_at_least_one_position_is_chosen():
    special = torch.zeros(10, dtype=torch.bool)
    special[:7] = True
    ids = torch.tensor([[4, 8, 5]])
    for seed in range(20):
        _, targets = mask_tokens(ids, MASK, special, torch.Generator().manual_seed(seed))
        assert targets.tolist() == [[IGNORE_INDEX, 8, IGNORE_INDEX]]


def _task(tokenizer, **kw):
    cfg = ModelConfig(arch="bert", head="masked_lm", vocab_size=tokenizer.vocab_size, d_model=32,
                      n_layers=1, n_heads=4, max_len=16)
    tokens = np.array(tokenizer.encode("the cat sat on the mat and the dog ran " * 30), dtype=np.uint16)
    return MaskedLMTask(build_model(cfg), tokenizer, tokens, tokens, block_size=16, batch_size=4,
                        seed=3, eval_batches=2, **kw)


def test_windows_are_wrapped_and_resume_exactly():
    tok = train_tokenizer("wordpiece", ["the cat sat on the mat and the dog ran"] * 5, vocab_size=60)
    task = _task(tok)
    inputs, targets = task.next_batch()
    assert inputs.shape == (4, 16)
    assert (inputs[:, 0] == tok.cls_id).all() and (inputs[:, -1] == tok.sep_id).all()
    assert (targets != IGNORE_INDEX).any()
    state = task.state_dict()
    expected = [task.next_batch() for _ in range(3)]
    other = _task(tok)
    other.load_state_dict(state)
    for (a, b), (c, d) in zip(expected, [other.next_batch() for _ in range(3)]):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert task.evaluate() == task.evaluate()  # fixed validation windows and masks


def test_bad_setups_are_named():
    tok = train_tokenizer("wordpiece", ["the cat sat"] * 5, vocab_size=40)
    gpt = build_model(ModelConfig(arch="gpt", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                                  n_heads=4, max_len=16))
    tokens = np.arange(7, 30, dtype=np.uint16).repeat(10)
    with pytest.raises(ConfigError, match="needs a bidirectional encoder"):
        MaskedLMTask(gpt, tok, tokens, tokens, block_size=16, batch_size=2)
    char = train_tokenizer("char", ["the cat sat"], vocab_size=40)
    with pytest.raises(ConfigError, match=r"needs a tokenizer with a \[MASK\] token"):
        _task(char)
    with pytest.raises(ConfigError, match="tbptt does not apply"):
        _task(tok, tbptt=True)


def test_recipe_learns_on_a_toy_corpus_and_evaluates(tiny_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))  # `evaluate` caches tokens there
    cfg = load_config(RECIPE, [
        f"data.path={tiny_corpus}", f"out={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}",
        "tokenizer.vocab_size=200", "model.d_model=48", "model.n_layers=2", "model.n_heads=4",
        "model.d_ff=96", "model.max_len=32", "model.dropout=0.0", "train.max_steps=200",
        # rotary positions leave the masked-LM plateau (predicting unigram frequencies) within
        # ~50 steps; learned absolute positions, as in the full recipe, take ~500 here
        "model.positional=rotary", "train.batch_size=16", "train.warmup_steps=10",
        "train.lr=3e-3", "train.eval_every=40", "train.eval_batches=4", "train.progress=false",
        "train.threads=1"])
    run_dir = pretrain(cfg, log=lambda *a: None)
    with open(run_dir / "metrics.csv", newline="") as fh:
        val = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    first, last = float(val[0]["loss"]), float(val[-1]["loss"])
    assert last < 0.4 * first, (first, last)  # the masked-LM loss falls
    assert float(val[-1]["accuracy"]) > float(val[0]["accuracy"]) + 0.4
    assert "[MASK]" in (run_dir / "samples.txt").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", str(tiny_corpus), "--max-batches", "4",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "ppl" in out
