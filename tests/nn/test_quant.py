"""int8 frozen base: outputs and LoRA gradients as with the dequantized weights, a quarter of
the bytes, no float copy kept for backward, ordinary checkpoints, exact resume."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ConfigError, ModelConfig
from lmforge.models.build import BACKBONES, build_model
from lmforge.nn.lora import apply_lora, mark_only_lora_trainable
from lmforge.nn.quant import Int8Linear, int8_bytes_saved, quantize_frozen_base, quantize_rows
from lmforge.train.activation_checkpointing import apply_memory_options

V, T = 40, 10


def test_int8_linear_computes_with_its_dequantized_weight():
    lin = nn.Linear(48, 24)
    q = Int8Linear(lin)
    x = torch.randn(5, 3, 48, requires_grad=True)
    w = q.weight  # dequantized
    assert (w - lin.weight).abs().max() <= q.scale.max() / 2 + 1e-7  # int8 rounding only
    y = q(x)
    torch.testing.assert_close(y, F.linear(x, w, lin.bias), atol=1e-5, rtol=1e-5)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    (ref,) = torch.autograd.grad(F.linear(x, w, lin.bias).square().sum(), x)
    torch.testing.assert_close(gx, ref, atol=1e-5, rtol=1e-5)


def test_backward_keeps_int8_not_a_float_copy_of_the_weight():
    q = Int8Linear(nn.Linear(64, 32, bias=False))
    saved = []
    x = torch.randn(4, 64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        q(x)
    assert any(t.dtype == torch.int8 and t.shape == (32, 64) for t in saved)
    assert not any(t.is_floating_point() and t.shape in ((32, 64), (64, 32)) for t in saved)


def test_quantization_matches_torchao_within_one_step():
    torchao_q = pytest.importorskip("torchao.quantization")
    lin = nn.Linear(64, 32)
    ours, scale = quantize_rows(lin.weight)
    ref = copy.deepcopy(nn.Sequential(lin))
    torchao_q.quantize_(ref, torchao_q.Int8WeightOnlyConfig())
    # torchao maps a row's max to 127.5 steps, we map it to 127 (a symmetric range whose
    # re-quantization is exact): the dequantized weights agree to a quantization step
    theirs = ref[0].weight.dequantize()
    assert (ours.float() * scale[:, None] - theirs).abs().max() <= scale.max()
    x = torch.randn(4, 64)
    torch.testing.assert_close(Int8Linear(lin)(x), ref(x), atol=3e-2, rtol=0)


def _lora_gpt(arch: str = "gpt"):
    kw = dict(n_kv_heads=2, d_ff=64) if arch == "llama" else {}
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, vocab_size=V, d_model=32, n_layers=2, n_heads=4,
                                    max_len=T, **kw))
    apply_lora(model.backbone, rank=4, alpha=8)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    mark_only_lora_trainable(model)
    return model


@pytest.mark.parametrize("arch", ["gpt"] + (["llama"] if "llama" in BACKBONES else []))
def test_lora_gradients_equal_the_model_with_dequantized_weights(arch):
    model = _lora_gpt(arch)
    names = quantize_frozen_base(model)
    assert names and all(name.endswith(".base") for name in names)  # only the frozen bases
    reference = _lora_gpt(arch)  # same weights, then the dequantized ones copied in
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, V, (2, T))
    a, b = model(ids, ids)[1], reference(ids, ids)[1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    ga = torch.autograd.grad(a, [p for p in model.parameters() if p.requires_grad])
    gb = torch.autograd.grad(b, [p for p in reference.parameters() if p.requires_grad])
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_memory_saved_and_state_dict_round_trip_is_exact():
    model = _lora_gpt()
    frozen = [m for m in model.modules() if isinstance(m, nn.Linear) and
              not m.weight.requires_grad and m.weight is not model.lm_head.weight]
    fp32_bytes = sum(m.weight.numel() * 4 for m in frozen)
    scale_bytes = sum(m.out_features * 4 for m in frozen)
    keys = set(model.state_dict())
    quantize_frozen_base(model)
    assert set(model.state_dict()) == keys  # checkpoints look like the float model's
    assert int8_bytes_saved(model) == fp32_bytes * 3 // 4 - scale_bytes  # 1 byte, not 4, + scales
    plain = _lora_gpt()
    plain.load_state_dict(model.state_dict())  # an ordinary model reads the checkpoint
    again = _lora_gpt()
    quantize_frozen_base(again)
    again.load_state_dict(model.state_dict())  # re-quantized: bit-identical int8 and scales
    for m1, m2 in zip(model.modules(), again.modules()):
        if isinstance(m1, Int8Linear):
            assert torch.equal(m1.qweight, m2.qweight) and torch.equal(m1.scale, m2.scale)


def test_base_dtype_int8_needs_a_frozen_base():
    model = build_model(ModelConfig(arch="gpt", vocab_size=V, d_model=16, n_layers=1, n_heads=2,
                                    max_len=T))
    train = type("Train", (), {"base_dtype": "int8"})()
    with pytest.raises(ConfigError, match="use it with LoRA"):
        apply_memory_options(model, train)


def test_lora_run_with_int8_base_resumes_exactly(tiny_corpus, tmp_path):
    from tests.train.test_loop import make_trainer, train_losses

    over = ["model.extra={lora: {rank: 4, alpha: 8}}", "train.base_dtype=int8",
            "train.activation_checkpointing=true", "train.lr=1e-2"]

    def trainer(run, resume=False):  # LoRA wraps the blocks' linears, their bases frozen
        return make_trainer(tiny_corpus, run, resume=resume, overrides=over)

    straight = trainer(tmp_path / "a")
    assert any(isinstance(m, Int8Linear) for m in straight.model.modules())
    straight.fit()
    stopped = trainer(tmp_path / "b")
    stopped.fit(until_step=10)
    resumed = trainer(tmp_path / "b", resume=True)
    resumed.fit()
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 21)) and a[20] < a[1]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-6, step


def test_ddp_does_not_rebroadcast_the_int8_base():
    model = _lora_gpt()
    names = quantize_frozen_base(model)
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    assert ignored == {f"backbone.{n}.{b}" for n in names for b in ("qweight", "scale")}
    assert ignored <= {n for n, _ in model.named_buffers()}
