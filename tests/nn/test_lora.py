"""LoRA: adapters start as a no-op, only adapters and head train, merging keeps outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.models.build import build_model
from lmforge.nn.lora import (LoRALinear, apply_lora, lora_parameters, lora_targets,
                             mark_only_lora_and_head_trainable, merge_lora)


def gpt_classifier(**extra):
    cfg = ModelConfig(arch="gpt", head="classifier", vocab_size=40, d_model=16, n_layers=2,
                      n_heads=2, max_len=12, n_classes=3, pooling="mean", extra=extra)
    return build_model(cfg)


def test_fresh_adapter_is_a_no_op_and_merge_matches():
    torch.manual_seed(0)
    base = nn.Linear(8, 5)
    x = torch.randn(4, 3, 8)
    expected = base(x)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    torch.testing.assert_close(lora(x), expected)  # B = 0 at start
    with torch.no_grad():
        lora.lora_B.normal_()
    out = lora(x)
    assert not torch.allclose(out, expected)
    # y = x W^T + b + (alpha / r) x A^T B^T, written out
    manual = expected + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)
    torch.testing.assert_close(out, manual)
    torch.testing.assert_close(lora.merged()(x), out, atol=1e-6, rtol=1e-5)


def test_targets_select_by_name_pattern():
    model = gpt_classifier()
    assert lora_targets(model.backbone, ["attn.qkv"]) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    assert lora_targets(model.backbone, ["blocks.1.mlp.*"]) == ["blocks.1.mlp.fc", "blocks.1.mlp.proj"]
    assert len(lora_targets(model.backbone)) == 8  # qkv, proj, fc, proj per block
    names = apply_lora(model.backbone, rank=2, targets=["attn.qkv"])
    assert len(names) == 2 and isinstance(model.backbone.blocks[0].attn.qkv, LoRALinear)
    assert lora_targets(model.backbone, ["attn.qkv"]) == []  # already wrapped: never twice
    with pytest.raises(ValueError, match=r"match no nn.Linear layer of GPT.*its linear layers are: blocks\.\*\.attn\.qkv, blocks\.\*\.attn\.proj, blocks\.\*\.mlp\.fc, blocks\.\*\.mlp\.proj$"):
        apply_lora(model.backbone, targets=["nothing"])


def test_recurrent_backbones_have_nothing_to_adapt():
    cfg = ModelConfig(arch="lstm", head="classifier", vocab_size=30, d_model=8, n_layers=1)
    model = build_model(cfg)
    with pytest.raises(ValueError, match="fused nn.RNN/LSTM/GRU"):
        apply_lora(model.backbone)


def test_only_adapters_and_head_train_and_merge_gives_identical_outputs():
    torch.manual_seed(0)
    model = gpt_classifier(lora={"rank": 4, "alpha": 8})  # the head applies LoRA at build
    n_trainable = mark_only_lora_and_head_trainable(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert n_trainable == sum(p.numel() for p in lora_parameters(model)) + \
        sum(p.numel() for p in model.head.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 40, (8, 10))
    labels = torch.randint(0, 3, (8,))
    for _ in range(5):
        opt.zero_grad()
        model(ids, labels)[1].backward()
        opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == (name in trainable), name
    model.eval()
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[2:, 7:] = False
    unmerged = model(ids, mask=mask)[0]
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert "lora" not in model.config.extra
    torch.testing.assert_close(model(ids, mask=mask)[0], unmerged, atol=1e-5, rtol=1e-5)
    # the merged weights load into a plain model built from the merged config
    plain = build_model(model.config).eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain(ids, mask=mask)[0], unmerged, atol=1e-5, rtol=1e-5)


def test_layers_sharing_an_input_stack_their_A_matrices_with_the_same_result(monkeypatch):
    """project(x, q, k, v) on LoRA layers (one product for the three A matrices) gives what
    each layer gives alone: outputs and every gradient; with dropout each layer runs alone."""
    from lmforge.nn import projections
    from lmforge.nn.lora import shared_input_lora

    torch.manual_seed(0)
    layers = [LoRALinear(nn.Linear(12, n, bias=n == 5), rank=r, alpha=2.0 * r)
              for n, r in [(12, 4), (5, 2), (5, 4)]]
    for layer in layers:
        nn.init.normal_(layer.lora_B)  # a nonzero update
    x = torch.randn(3, 7, 12, requires_grad=True)
    params = [x] + [p for layer in layers for p in (layer.lora_A, layer.lora_B)]

    def outputs_and_grads(outputs):
        for p in params:
            p.grad = None
        sum((y * torch.arange(y.numel()).view_as(y)).sum() for y in outputs).backward()
        return outputs, [p.grad for p in params]

    alone, want = outputs_and_grads([layer(x) for layer in layers])
    shared, got = outputs_and_grads(shared_input_lora(x, tuple(layers)))
    for a, b in zip(shared + got, alone + want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    calls = []
    monkeypatch.setattr(projections, "shared_input_lora",
                        lambda x, ls: calls.append(len(ls)) or shared_input_lora(x, ls))
    projections.project(x, *layers)
    assert calls == [3]  # project takes that path for LoRA layers
    layers[1].enabled = False  # not with a disabled adapter, nor with dropout
    assert shared_input_lora(x, tuple(layers)) is None
    layers[1].enabled = True
    assert shared_input_lora(x, (layers[0], LoRALinear(nn.Linear(12, 5), rank=2, dropout=0.1))) is None
