"""bf16 attention on CPU takes its own paths (nn/attention.py: sdpa); they must agree with
PyTorch's fp32 kernel, forward and backward, for every mask the models pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.nn.attention import MATH_MAX_KEYS, build_attn_mask, sdpa


def qkv(tq: int, tk: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 2, t, 16, generator=gen) for t in (tq, tk, tk)]


def padding_mask(tk: int) -> torch.Tensor:
    mask = torch.ones(3, tk, dtype=torch.bool)
    mask[1, -3:] = False  # one row right-padded
    mask[2, :2] = False  # one row left-padded
    return mask


CASES = {
    "causal": dict(tq=20, tk=20, kwargs=lambda: {"is_causal": True}),
    "plain": dict(tq=20, tk=20, kwargs=lambda: {}),
    "causal+padding": dict(tq=20, tk=20, kwargs=lambda: {
        "attn_mask": build_attn_mask(20, 20, True, padding_mask(20), torch.device("cpu"))}),
    "cached queries": dict(tq=4, tk=20, kwargs=lambda: {
        "attn_mask": build_attn_mask(4, 20, True, None, torch.device("cpu"))}),
    "long (fp32 kernel path)": dict(tq=MATH_MAX_KEYS + 8, tk=MATH_MAX_KEYS + 8,
                                    kwargs=lambda: {"is_causal": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_cpu_attention_matches_fp32_reference(case):
    spec = CASES[case]
    q, k, v = qkv(spec["tq"], spec["tk"])
    kwargs = spec["kwargs"]()
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_inputs, **kwargs)
    ref.square().sum().backward()

    low_inputs = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(*low_inputs, **kwargs)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()

    # bf16 keeps 8 bits of mantissa: errors of a few 1e-3 relative to the values' scale
    assert torch.allclose(out.float(), ref, atol=3e-2, rtol=3e-2), (out.float() - ref).abs().max()
    for low, high in zip(low_inputs, ref_inputs):
        scale = high.grad.abs().max()
        assert (low.grad.float() - high.grad).abs().max() < 0.05 * scale


def test_fp32_attention_is_pytorchs_kernel_exactly():
    q, k, v = qkv(20, 20)
    assert torch.equal(sdpa(q, k, v, is_causal=True),
                       F.scaled_dot_product_attention(q, k, v, is_causal=True))
