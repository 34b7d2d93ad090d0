"""Activation checkpointing changes memory, never numbers: gradients, LoRA, bf16, resume, DDP/FSDP."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from lmforge.config import ConfigError, ModelConfig, load_config
from lmforge.models.build import BACKBONES, build_model
from lmforge.nn.lora import apply_lora, mark_only_lora_and_head_trainable
from lmforge.train.activation_checkpointing import (apply_memory_options, checkpointed_blocks,
                                                    disable_activation_checkpointing,
                                                    enable_activation_checkpointing)

V, T = 40, 12


def tiny(arch: str, **kw) -> ModelConfig:
    base = dict(arch=arch, vocab_size=V, d_model=32, n_layers=4, n_heads=4, max_len=T,
                dropout=0.1)
    if arch == "llama":
        base.update(n_kv_heads=2, d_ff=64, qkv_bias=True)
    if arch == "transformer":
        base.update(head="seq2seq")
    if arch == "bert":
        base.update(head="masked_lm")
    base.update(kw)
    return ModelConfig(**base)


def loss_of(model, arch: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (3, T), generator=g)
    targets = torch.randint(0, V, (3, T), generator=g)
    targets[:, :3] = -100
    torch.manual_seed(seed)  # dropout masks: the recomputation must replay them
    if arch == "transformer":
        return model(ids[:, :8], ids, targets)[1]
    return model(ids, targets)[1]


def grads(model, arch: str) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_of(model, arch).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5, msg=name)


ARCHS = ["gpt", "bert", "transformer"] + (["llama"] if "llama" in BACKBONES else [])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("every", [1, 3])
def test_gradients_equal_the_unchecked_model(arch, every):
    torch.manual_seed(0)
    model = build_model(tiny(arch)).train()
    ref = grads(model, arch)
    names = enable_activation_checkpointing(model, every)
    layers = 4 * (2 if arch == "transformer" else 1)  # seq2seq: encoder and decoder stacks
    assert checkpointed_blocks(model) == len(names) == len(range(0, 4, every)) * layers // 4
    keys = set(model.state_dict())
    assert_same_grads(grads(model, arch), ref)
    assert set(model.state_dict()) == keys  # parameter names untouched
    disable_activation_checkpointing(model)
    assert checkpointed_blocks(model) == 0


def test_checkpointing_really_recomputes():
    torch.manual_seed(0)
    model = build_model(tiny("gpt", dropout=0.0))
    calls = []
    model.backbone.blocks[0].mlp.register_forward_pre_hook(lambda *a: calls.append(1))
    loss_of(model, "gpt").backward()
    assert len(calls) == 1
    enable_activation_checkpointing(model)
    calls.clear()
    loss_of(model, "gpt").backward()
    assert len(calls) == 2  # forward, then again in backward
    calls.clear()
    with torch.no_grad():  # evaluation / decoding: no recomputation, no checkpoint
        loss_of(model, "gpt")
    assert len(calls) == 1


@pytest.mark.parametrize("arch", ARCHS[:1] + (["llama"] if "llama" in BACKBONES else []))
def test_lora_gradients_equal_and_only_adapters_reach_the_optimizer(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch))
    apply_lora(model.backbone, rank=4, alpha=8)
    with torch.no_grad():  # nonzero B, so every adapter matrix gets a gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    mark_only_lora_and_head_trainable(model)
    ref = grads(model, arch)
    checked = copy.deepcopy(model)
    enable_activation_checkpointing(checked)
    assert_same_grads(grads(checked, arch), ref)
    assert all("lora_" in n for n in ref)  # frozen base: no gradient kept anywhere else
    from lmforge.train.optim import build_optimizer

    opt = build_optimizer(checked, load_config(None, []).train, torch.device("cpu"))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for p in checked.parameters() if p.requires_grad}
    assert in_opt == trainable and len(in_opt) < len(list(checked.parameters()))


def test_bf16_autocast_gradients_are_identical():
    torch.manual_seed(0)
    model = build_model(tiny("gpt"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = grads(model, "gpt")
        enable_activation_checkpointing(model)
        got = grads(model, "gpt")
    assert_same_grads(got, ref)


def test_families_without_blocks_are_refused():
    model = build_model(ModelConfig(arch="rnn", vocab_size=V, d_model=16, n_layers=1))
    with pytest.raises(ConfigError, match="no Transformer block stack"):
        enable_activation_checkpointing(model)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        load_config(None, ["train.checkpoint_every=0"])


def test_apply_memory_options_sets_both_switches():
    model = build_model(tiny("gpt"))
    cfg = load_config(None, ["train.activation_checkpointing=true", "train.checkpoint_every=2",
                             "train.chunked_ce=true", "train.ce_chunk_size=7"]).train
    notes = apply_memory_options(model, cfg)
    assert checkpointed_blocks(model) == 2 and model.chunked_loss and model.loss_chunk_size == 7
    assert len(notes) == 2


def _trainer(corpus, run, resume=False, extra=()):
    from tests.train.test_loop import make_trainer

    return make_trainer(corpus, run, resume=resume,
                        overrides=["train.activation_checkpointing=true", "train.chunked_ce=true",
                                   *extra])


def test_resumed_run_continues_exactly_and_equals_the_unchecked_run(tiny_corpus, tmp_path):
    from tests.train.test_loop import make_trainer, train_losses

    plain = make_trainer(tiny_corpus, tmp_path / "plain")
    plain.fit()
    stopped = _trainer(tiny_corpus, tmp_path / "ac")
    assert checkpointed_blocks(stopped.model) == 2 and stopped.model.chunked_loss
    stopped.fit(until_step=10)
    resumed = _trainer(tiny_corpus, tmp_path / "ac", resume=True)
    resumed.fit()
    a, b = train_losses(tmp_path / "plain"), train_losses(tmp_path / "ac")
    assert sorted(a) == sorted(b) == list(range(1, 21))
    for step in a:  # same dropout masks, same numbers up to float summation order
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    for p, q in zip(plain.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ DDP and FSDP (torchrun)

INT8_LORA = ("model.extra={lora: {rank: 4, alpha: 8}}", "train.base_dtype=int8")


def worker(out: Path, corpus: Path) -> None:
    from lmforge.train import distributed
    from tests.train.test_distributed import make_trainer

    info = distributed.setup("cpu")
    for mode, extra in (("ddp", ()), ("fsdp", ("train.fsdp=true",)), ("ddp-int8", INT8_LORA)):
        run = out / f"{mode}-rank{info.rank}"
        make_trainer(corpus, run, 2, info.rank, 2, extra=(*extra, "train.chunked_ce=true",
                     "train.activation_checkpointing=true")).fit()
    distributed.cleanup()


@pytest.mark.slow  # one two-process torchrun job (~30 s on 2 cores)
def test_ddp_and_fsdp_with_the_memory_switches_equal_one_process(tmp_path, torchrun):
    from tests.train.test_distributed import make_trainer, train_losses

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"ROMEO: my love is {['true', 'blind', 'sweet'][i % 3]} as the "
                                f"night; JULIET: the {['moon', 'sun', 'star'][i % 3]} doth shine."
                                for i in range(300)) + "\n")
    torchrun([__file__, "--worker", tmp_path, corpus], tmp_path / "cache", timeout=170)
    make_trainer(corpus, tmp_path / "single", 4).fit()
    make_trainer(corpus, tmp_path / "single-int8", 4, extra=INT8_LORA).fit()
    for mode, single in (("ddp", "single"), ("fsdp", "single"), ("ddp-int8", "single-int8")):
        one, got = train_losses(tmp_path / single), train_losses(tmp_path / f"{mode}-rank0")
        for step in one:
            assert abs(got[step] - one[step]) < 1e-5, (mode, step, got[step], one[step])


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    worker(Path(sys.argv[2]), Path(sys.argv[3]))


# ------------------------------------------------------------------ through `finetune sft`

@pytest.mark.slow  # three short SFT runs (~10 s on a quiet 2-core machine)
def test_sft_with_every_memory_switch_equals_plain_sft(tmp_path):
    """LoRA SFT on a llama base: checkpointing + chunked CE give the plain run's curve; with
    the int8 base as well the run still learns and merges."""
    import csv
    import warnings

    from lmforge.tasks.sft import finetune
    from tests.tasks.sft_helpers import make_base, toy_chats, write_jsonl

    base = make_base(tmp_path / "base", arch="llama")
    data = write_jsonl(tmp_path / "chats.jsonl", toy_chats(40))
    fast = ["train.threads=1", "train.progress=false", "train.batch_size=8", "train.lr=5e-2",
            "train.warmup_steps=0", "train.log_every=1", "train.max_steps=12",
            "train.eval_every=6"]
    switches = ["train.activation_checkpointing=true", "train.chunked_ce=true"]

    def run(name, extra):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no chat template: ChatML
            out = finetune(str(data), base=str(base), out=str(tmp_path / name),
                           overrides=fast + extra, lora={"rank": 4, "alpha": 8})
        with open(out / "metrics.csv") as fh:
            return {(r["split"], int(r["step"])): float(r["loss"]) for r in csv.DictReader(fh)}

    plain, switched = run("plain", []), run("switched", switches)
    assert plain.keys() == switched.keys()
    for key in plain:
        assert abs(plain[key] - switched[key]) < 1e-4, (key, plain[key], switched[key])
    int8 = run("int8", switches + ["train.base_dtype=int8"])
    assert int8["train", 12] < 0.8 * int8["train", 1]
    assert (tmp_path / "int8" / "adapter.safetensors").is_file()
