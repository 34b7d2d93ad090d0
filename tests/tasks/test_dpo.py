"""DPO: the loss equals the formula, log-probs equal the logits', a toy preference is learned."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.run import load_run
from lmforge.tasks.dpo import dpo_loss, finetune, sequence_logprobs
from lmforge.tasks.dpo_data import read_pairs

from .sft_helpers import make_base, write_jsonl

FAST = ["train.threads=1", "train.progress=false", "train.warmup_steps=0", "train.log_every=5"]
WORDS = ["cat", "dog", "sun", "sky", "red", "owl", "map", "pen"]


def toy_pairs(n: int) -> list[dict]:
    """Preferred: the word in capitals; dispreferred: the word as it was."""
    return [{"prompt": f"say {WORDS[i % len(WORDS)]}", "chosen": WORDS[i % len(WORDS)].upper(),
             "rejected": WORDS[i % len(WORDS)]} for i in range(n)]


def test_loss_equals_the_formula():
    pc, pr = torch.tensor([-3.0, -7.5, -2.0]), torch.tensor([-4.0, -6.0, -9.0])
    rc, rr = torch.tensor([-3.5, -7.0, -2.5]), torch.tensor([-3.9, -6.5, -8.0])
    beta = 0.1
    loss, stats = dpo_loss(pc, pr, rc, rr, beta)
    expected = sum(-math.log(1 / (1 + math.exp(-beta * ((a - c) - (b - d)))))
                   for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())) / 3
    assert abs(loss.item() - expected) < 1e-6
    torch.testing.assert_close(stats["chosen_reward"], beta * (pc - rc))
    torch.testing.assert_close(stats["rejected_reward"], beta * (pr - rr))


def test_sequence_logprobs_equal_the_full_logits(tmp_path):
    base = make_base(tmp_path / "base")
    model = load_run(base, device="cpu").model
    x = torch.randint(0, 40, (3, 10))
    y = torch.randint(0, 40, (3, 10))
    y[:, :4] = -100  # the prompt is not scored
    y[2, 8:] = -100  # padding
    logp = torch.log_softmax(model(x)[0].float(), -1)
    expected = torch.where(y != -100, logp.gather(-1, y.clamp(min=0)[..., None])[..., 0], 0).sum(-1)
    torch.testing.assert_close(sequence_logprobs(model, x, y), expected, atol=1e-5, rtol=1e-5)


def test_bad_pairs_name_file_and_line(tmp_path, capsys):
    rows = toy_pairs(2) + [{"prompt": "p", "chosen": "same", "rejected": "same"}]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    with pytest.raises(ConfigError, match=r"prefs.jsonl:3: chosen equals rejected"):
        read_pairs(path)
    write_jsonl(path, [{"prompt": "p", "chosen": "a"}])
    with pytest.raises(ConfigError, match=r"prefs.jsonl:1: a preference row needs prompt, chosen and rejected"):
        read_pairs(path)
    base = make_base(tmp_path / "base")
    write_jsonl(path, rows)
    code = main(["finetune", "dpo", "--base", str(base), "--data", str(path), "--out",
                 str(tmp_path / "dpo")])
    assert code == 1 and "prefs.jsonl:3: chosen equals rejected" in capsys.readouterr().err
    assert not (tmp_path / "dpo").exists()


def read_metrics(run):
    with open(run / "metrics.csv") as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == "val"]


def test_lora_dpo_learns_a_toy_preference(tmp_path, capsys):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "prefs.jsonl", toy_pairs(64))
    val = write_jsonl(tmp_path / "val.jsonl", toy_pairs(16))
    run = finetune(str(data), base=str(base), out=str(tmp_path / "dpo"), val=str(val),
                   overrides=FAST + ["train.max_steps=30", "train.eval_every=10", "train.lr=2e-2",
                                     "train.batch_size=8"],
                   beta=0.5, lora={"rank": 4, "alpha": 8, "merge": False})
    rows = read_metrics(run)
    assert set(["reward_accuracy", "reward_margin", "chosen_logp", "rejected_logp"]) <= set(rows[0])
    assert float(rows[-1]["reward_accuracy"]) == 1.0 and float(rows[-1]["reward_margin"]) > 0.5
    assert float(rows[-1]["loss"]) < math.log(2) - 0.2  # below the untrained policy's log 2
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(val), "--device", "cpu"]) == 0
    assert "16 pairs | reward accuracy 1.0000" in capsys.readouterr().out


def test_full_dpo_keeps_a_frozen_reference_and_resumes_exactly(tmp_path):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "prefs.jsonl", toy_pairs(24))
    common = FAST + ["train.batch_size=4", "train.lr=1e-3", "train.decay_steps=6",
                     "train.eval_every=3", "train.max_steps=6"]
    straight = finetune(str(data), base=str(base), out=str(tmp_path / "a"), mode="full",
                        overrides=common)
    half = finetune(str(data), base=str(base), out=str(tmp_path / "b"), mode="full",
                    overrides=common + ["train.max_steps=3"])
    finetune(resume=str(half), overrides=["train.max_steps=6"])
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(half / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["reward_margin"] for r in read_metrics(straight)] == \
        [r["reward_margin"] for r in read_metrics(half)]
    assert float(read_metrics(straight)[-1]["reward_accuracy"]) > 0.5  # the policy moved
