"""`lmforge finetune lm --mode lora`: continued pretraining that trains the adapters only."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.nn.lora_io import read_adapter_metadata

from .sft_helpers import make_base


def test_lm_lora_trains_adapters_only(tmp_path):
    base = make_base(tmp_path / "base", max_len=32)
    corpus = tmp_path / "notes.txt"
    corpus.write_text("the cat sat on the mat. the dog ran to the sun.\n" * 60)
    out = tmp_path / "lm"
    code = main(["finetune", "lm", "--base", str(base), "--data", str(corpus), "--out", str(out),
                 "--mode", "lora", "--lora.rank", "2", "--lora.targets", "qkv,fc",
                 "train.max_steps=4", "train.eval_every=4", "train.batch_size=4", "train.threads=1",
                 "train.progress=false", "train.sample_tokens=0", "train.eval_batches=2"])
    assert code == 0
    before, after = load_file(str(base / "model.safetensors")), load_file(str(out / "model.safetensors"))
    lora = [k for k in after if "lora_" in k]
    assert len(lora) == 8  # A and B of qkv and fc in two blocks
    for key, tensor in before.items():  # every base weight unchanged (under its wrapped name)
        name = key.replace("qkv.weight", "qkv.base.weight").replace("qkv.bias", "qkv.base.bias") \
            .replace("fc.weight", "fc.base.weight").replace("fc.bias", "fc.base.bias")
        assert torch.equal(after[name], tensor), key
    assert any(not torch.equal(after[k], torch.zeros_like(after[k])) for k in lora if "lora_B" in k)
    assert read_adapter_metadata(out / "adapter.safetensors")["base"] == str(base.resolve())
