"""lmforge LoRA against PEFT, adapters on disk, disabling, merging, loading plain weights."""

from __future__ import annotations

import copy

import pytest
import torch

from lmforge.config import ConfigError, ModelConfig
from lmforge.models.build import build_model
from lmforge.nn.lora import (LoRALinear, apply_lora, disable_adapters, mark_only_lora_trainable,
                             merge_lora)
from lmforge.nn.lora_io import (load_adapter, load_base_weights, read_adapter_metadata,
                                save_adapter)
from lmforge.train.checkpoint import WEIGHTS, save_weights

peft = pytest.importorskip("peft")


def tiny_gpt(**extra) -> torch.nn.Module:
    cfg = ModelConfig(arch="gpt", vocab_size=50, d_model=16, n_layers=2, n_heads=2, max_len=16,
                      extra=extra)
    return build_model(cfg)


def test_forward_and_backward_equal_peft():
    torch.manual_seed(0)
    plain = tiny_gpt()
    ours, theirs = copy.deepcopy(plain), copy.deepcopy(plain)
    apply_lora(ours.backbone, rank=4, alpha=8.0, targets=["qkv", "fc"])
    mark_only_lora_trainable(ours)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                             target_modules=["attn.qkv", "mlp.fc"])
    theirs = peft.get_peft_model(theirs, config)
    # the same adapter values in both (B non-zero, so the update is really exercised)
    for name, module in ours.named_modules():
        if isinstance(module, LoRALinear):
            with torch.no_grad():
                module.lora_B.normal_(std=0.1)
            twin = theirs.base_model.model.get_submodule(name)
            with torch.no_grad():
                twin.lora_A["default"].weight.copy_(module.lora_A)
                twin.lora_B["default"].weight.copy_(module.lora_B)
    ids = torch.randint(0, 50, (3, 12))
    targets = torch.randint(0, 50, (3, 12))
    logits, loss = ours(ids, targets)
    ref_logits, ref_loss = theirs(ids, targets)
    assert (logits - ref_logits).abs().max().item() <= 1e-5
    loss.backward()
    ref_loss.backward()
    n = 0
    for name, module in ours.named_modules():
        if isinstance(module, LoRALinear):
            twin = theirs.base_model.model.get_submodule(name)
            for mine, ref in ((module.lora_A, twin.lora_A["default"].weight),
                              (module.lora_B, twin.lora_B["default"].weight)):
                assert (mine.grad - ref.grad).abs().max().item() <= 1e-5
                n += 1
    assert n == 8  # A and B of qkv and fc in two blocks
    # the same trainable parameter count
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == \
        sum(p.numel() for p in theirs.parameters() if p.requires_grad)


def test_disable_adapters_gives_the_base_and_merge_keeps_outputs():
    torch.manual_seed(0)
    model = tiny_gpt().eval()
    ids = torch.randint(0, 50, (2, 10))
    base_logits = model(ids)[0]
    apply_lora(model.backbone, rank=2, alpha=4.0, targets=["q", "k", "v", "o", "qkv", "proj"])
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.2)
    adapted = model(ids)[0]
    assert not torch.allclose(adapted, base_logits)
    with disable_adapters(model):
        torch.testing.assert_close(model(ids)[0], base_logits)
    torch.testing.assert_close(model(ids)[0], adapted)  # back on after the block
    merge_lora(model)
    assert (model(ids)[0] - adapted).abs().max().item() <= 1e-5


def test_model_config_lora_rebuilds_adapters_and_loads_plain_weights(tmp_path):
    torch.manual_seed(0)
    plain = tiny_gpt()
    save_weights(plain, tmp_path / WEIGHTS)
    model = tiny_gpt(lora={"rank": 2, "alpha": 4, "targets": ["qkv"]})  # built with adapters
    assert isinstance(model.backbone.blocks[0].attn.qkv, LoRALinear)
    load_base_weights(model, tmp_path)
    ids = torch.randint(0, 50, (2, 8))
    torch.testing.assert_close(model.eval()(ids)[0], plain.eval()(ids)[0])  # B = 0: same model


def test_adapter_file_is_small_and_refused_on_another_base(tmp_path):
    torch.manual_seed(0)
    base_a, base_b = tmp_path / "a", tmp_path / "b"
    for folder, seed in ((base_a, 0), (base_b, 1)):
        folder.mkdir()
        torch.manual_seed(seed)
        save_weights(tiny_gpt(), folder / WEIGHTS)
    model = tiny_gpt(lora={"rank": 2, "alpha": 4, "targets": ["qkv"]})
    load_base_weights(model, base_a)
    mark_only_lora_trainable(model)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B)
    path = save_adapter(model, tmp_path / "adapter.safetensors", base_a)
    assert path.stat().st_size < (base_a / WEIGHTS).stat().st_size / 10
    meta = read_adapter_metadata(path)
    assert meta["base"] == str(base_a.resolve())
    fresh = tiny_gpt(lora={"rank": 2, "alpha": 4, "targets": ["qkv"]})
    load_base_weights(fresh, base_a)
    load_adapter(fresh, path, base_a)
    ids = torch.randint(0, 50, (2, 8))
    torch.testing.assert_close(fresh.eval()(ids)[0], model.eval()(ids)[0])
    with pytest.raises(ConfigError, match=r"trained on base .*/a .*cannot be applied to base .*/b"):
        load_adapter(fresh, path, base_b)


def test_llama_lora_equals_transformers_with_peft():
    """A tiny transformers Llama under PEFT vs the same weights imported into lmforge with
    adapters on q,k,v,o,gate,up,down: logits and every adapter gradient agree."""
    transformers = pytest.importorskip("transformers")
    from lmforge.convert.hf_llama import llama_from_hf

    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    cfg, state = llama_from_hf(hf_cfg.to_dict(), hf.state_dict())
    ours = build_model(cfg).eval()
    ours.load_state_dict(state)
    short = ["q", "k", "v", "o", "gate", "up", "down"]
    apply_lora(ours.backbone, rank=4, alpha=8.0, targets=short)
    mark_only_lora_trainable(ours)
    hf_names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj",
                "up": "up_proj", "down": "down_proj"}
    theirs = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                     target_modules=list(hf_names.values())))
    pairs = []
    for name, module in ours.named_modules():
        if isinstance(module, LoRALinear):
            layer, short_name = int(name.split(".")[2]), name.rsplit(".", 1)[1]
            part = "self_attn" if short_name in ("q", "k", "v", "o") else "mlp"
            twin = theirs.base_model.model.model.layers[layer].get_submodule(f"{part}.{hf_names[short_name]}")
            with torch.no_grad():
                module.lora_B.normal_(std=0.1)
                twin.lora_A["default"].weight.copy_(module.lora_A)
                twin.lora_B["default"].weight.copy_(module.lora_B)
            pairs.append((module, twin))
    assert len(pairs) == 14
    ids = torch.randint(0, 60, (2, 11))
    logits = ours(ids)[0]
    ref = theirs(input_ids=ids).logits
    assert (logits - ref).abs().max().item() <= 1e-5
    logits.float().pow(2).mean().backward()
    ref.float().pow(2).mean().backward()
    for mine, twin in pairs:
        assert (mine.lora_A.grad - twin.lora_A["default"].weight.grad).abs().max().item() <= 1e-5
        assert (mine.lora_B.grad - twin.lora_B["default"].weight.grad).abs().max().item() <= 1e-5
