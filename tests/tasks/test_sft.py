"""`lmforge finetune sft`: learns, writes adapters and a merged run, resumes exactly, refuses."""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.run import load_run
from lmforge.tasks.sft import finetune

from .sft_helpers import make_base, toy_chats, write_jsonl

FAST = ["train.threads=1", "train.progress=false", "train.batch_size=8", "train.lr=1e-2",
        "train.warmup_steps=0", "train.log_every=5"]


def val_losses(run):
    with open(run / "metrics.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "val"]


def test_lora_sft_learns_and_merges(tmp_path, capsys):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", toy_chats(80))
    with pytest.warns(UserWarning, match="no chat template; using ChatML"):
        run = finetune(str(data), base=str(base), out=str(tmp_path / "sft"),
                       overrides=FAST + ["train.max_steps=40", "train.eval_every=10", "train.lr=5e-2"],
                       lora={"rank": 4, "alpha": 8, "targets": ["qkv", "fc"]})
    losses = val_losses(run)
    assert losses[-1] < 0.6 * losses[0]  # the toy task is learnable
    adapter = load_file(str(run / "adapter.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert (run / "adapter.safetensors").stat().st_size < (base / "model.safetensors").stat().st_size / 3
    lora_run, merged = load_run(run, device="cpu"), load_run(run / "merged", device="cpu")
    assert "lora" not in merged.model_config.extra
    ids = torch.randint(0, 40, (2, 20))
    torch.testing.assert_close(lora_run.model(ids)[0], merged.model(ids)[0], atol=1e-5, rtol=1e-5)
    # evaluate dispatches on task.name: assistant-token loss and perplexity
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "assistant tokens | loss" in out and "perplexity" in out


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_resume_continues_exactly(tmp_path, arch):
    base = make_base(tmp_path / "base", arch=arch)
    data = write_jsonl(tmp_path / "chats.jsonl", toy_chats(40))
    common = FAST + ["train.decay_steps=8", "train.eval_every=4", "train.max_steps=8",
                     "model.dropout=0.0"]
    options = {"lora": {"rank": 2, "dropout": 0.1, "merge": False}}
    straight = finetune(str(data), base=str(base), out=str(tmp_path / "a"), overrides=common, **options)
    half = finetune(str(data), base=str(base), out=str(tmp_path / "b"),
                    overrides=common + ["train.max_steps=4"], **options)
    finetune(resume=str(half), overrides=["train.max_steps=8"])
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(half / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert val_losses(straight) == val_losses(half)


def test_full_mode_trains_every_weight(tmp_path):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", toy_chats(20))
    run = finetune(str(data), base=str(base), out=str(tmp_path / "full"), mode="full",
                   overrides=FAST + ["train.max_steps=3", "train.eval_every=3"])
    before, after = load_file(str(base / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert before.keys() == after.keys() and not (run / "adapter.safetensors").exists()
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("qkv.weight"))


def test_bad_targets_list_the_layers_and_create_nothing(tmp_path, capsys):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", toy_chats(10))
    out = tmp_path / "bad"
    code = main(["finetune", "sft", "--base", str(base), "--data", str(data), "--out", str(out),
                 "--lora.targets", "gate,up", "train.progress=false"])
    err = capsys.readouterr().err
    assert code == 1 and "lmforge: error: task.lora.targets: lora targets gate,up match no" in err
    assert "blocks.*.attn.qkv, blocks.*.attn.proj, blocks.*.mlp.fc, blocks.*.mlp.proj" in err
    assert not out.exists()
    code = main(["finetune", "sft", "--base", str(base), "--data", str(tmp_path / "nope.jsonl"),
                 "--out", str(out)])
    assert code == 1 and "nope.jsonl' does not exist" in capsys.readouterr().err


def test_merge_lora_command_and_a_foreign_base_refused(tmp_path, capsys):
    base, other = make_base(tmp_path / "base"), make_base(tmp_path / "other", seed=1)
    data = write_jsonl(tmp_path / "chats.jsonl", toy_chats(20))
    run = finetune(str(data), base=str(base), out=str(tmp_path / "sft"),
                   overrides=FAST + ["train.max_steps=3", "train.eval_every=3"],
                   lora={"rank": 2, "merge": False})
    assert not (run / "merged").exists()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code = main(["convert", "merge-lora", str(run), "--out", str(tmp_path / "m2"), "--base", str(other)])
    err = capsys.readouterr().err
    assert code == 1 and f"trained on base {base.resolve()}" in err and f"base {other.resolve()}" in err
    assert not (tmp_path / "m2").exists()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["convert", "merge-lora", str(run), "--out", str(tmp_path / "m2")]) == 0
    merged, lora = load_run(tmp_path / "m2", device="cpu"), load_run(run, device="cpu")
    ids = torch.randint(0, 40, (2, 16))
    torch.testing.assert_close(merged.model(ids)[0], lora.model(ids)[0], atol=1e-5, rtol=1e-5)
    assert (tmp_path / "m2" / "tokenizer.json").is_file()


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sft_and_dpo_run_on_the_recipe_scaffold(tmp_path):
    """Validated before anything exists, never over an existing run, locked while training."""
    from lmforge.config import ConfigError
    from lmforge.recipes.scaffold import LOCK, take_lock
    from lmforge.tasks.dpo import finetune as dpo

    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", toy_chats(20))
    with pytest.raises(ConfigError, match="train.lr must be positive"):
        finetune(str(data), base=str(base), out=str(tmp_path / "bad"), overrides=FAST + ["train.lr=-1"])
    assert not (tmp_path / "bad").exists()  # nothing was created
    run = finetune(str(data), base=str(base), out=str(tmp_path / "sft"),
                   overrides=FAST + ["train.max_steps=2", "train.eval_every=2"],
                   lora={"rank": 2, "merge": False})
    before = _snapshot(run)
    with pytest.raises(ConfigError, match="already holds a run"):
        finetune(str(data), base=str(base), out=str(run), overrides=FAST)
    with pytest.raises(ConfigError, match="already holds a run"):
        dpo(str(data), base=str(base), out=str(run), overrides=FAST)
    assert _snapshot(run) == before  # byte-identical
    take_lock(run / LOCK)  # a live command holds the run (this very process)
    try:
        with pytest.raises(ConfigError, match="lock|in use|running"):
            finetune(resume=str(run), overrides=["train.max_steps=4"])
    finally:
        (run / LOCK).unlink()
