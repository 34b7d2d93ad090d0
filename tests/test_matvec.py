"""Compiled matrix-vector decoding (`--compile`, nn/matvec.py): the same products as
F.linear to float rounding, the same greedy tokens as the usual kernels, layers restored
afterwards, and a plain fallback where torch.compile cannot run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.generate import DecodeOptions, generate_ids
from lmforge.generate.causal import generate_tokens
from lmforge.models.build import build_model
from lmforge.nn import matvec as mv


def tiny(arch: str) -> nn.Module:
    torch.manual_seed(0)
    extra = {"n_kv_heads": 2, "qkv_bias": True} if arch == "llama" else {}
    cfg = ModelConfig(arch=arch, vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_len=64,
                      positional="rotary", **extra)
    return build_model(cfg).eval()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_matvec_equals_linear(dtype, tol):
    torch.manual_seed(0)
    for n, k in [(96, 32), (7, 130), (300, 64)]:
        w, x = torch.randn(n, k, dtype=dtype), torch.randn(k, dtype=dtype)
        want = F.linear(x.float(), w.float())
        assert torch.allclose(mv.matvec(w, x).float(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_compiled_decoding_gives_the_same_tokens(arch, monkeypatch):
    model = tiny(arch)
    prompt = [3, 7, 11, 2, 9]
    plain = generate_ids(model, prompt, max_new_tokens=40, temperature=0)
    calls = []
    monkeypatch.setattr(mv, "matvecs", lambda ws, x: calls.append(len(ws)) or mv._mul_sums(ws, x))
    generate_ids(model, prompt, max_new_tokens=2, temperature=0, compile=True)
    before = len(calls)
    generate_ids(model, prompt, max_new_tokens=3, temperature=0, compile=True)
    step = calls[2 * before:]  # the second run's calls past the first run's: its one step more
    if arch == "gpt":  # per layer qkv | proj | fc | proj, then the output layer
        assert step == [1] * 9
    else:  # each Llama block is one compiled call (models/llama_step.py): the output layer
        assert step == [1]
    monkeypatch.undo()
    fast = generate_ids(model, prompt, max_new_tokens=40, temperature=0, compile=True)
    assert fast == plain
    # sampled with a seed, and beams: the same as well
    opts = dict(max_new_tokens=20, temperature=0.8, top_k=10, seed=3)
    assert generate_ids(model, prompt, compile=True, **opts) == generate_ids(model, prompt, **opts)
    beams = [DecodeOptions(max_new_tokens=12, num_beams=3, compile=c) for c in (False, True)]
    a, b = (generate_tokens(model, [prompt], o)[0][0].tokens for o in beams)
    assert a == b


def test_layers_are_restored_and_lora_layers_keep_their_update():
    from lmforge.nn.lora import apply_lora

    model = tiny("llama")
    apply_lora(model.backbone, rank=2, targets=["attn.q"])
    q = model.backbone.blocks[0].attn.q
    torch.nn.init.normal_(q.lora_B)  # a non-zero update
    x, xs = torch.randn(1, 1, 32), torch.randn(1, 3, 32)
    want_q = q(x)
    plain = [m for m in model.modules() if type(m) is nn.Linear]
    with mv.matvec_linears(model):
        assert all("forward" in m.__dict__ for m in plain)  # the base inside q as well
        layer = model.backbone.blocks[0].attn.k
        assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5)
        assert torch.equal(layer(xs), F.linear(xs, layer.weight, layer.bias))  # rows: BLAS
        assert torch.allclose(q(x), want_q, atol=1e-5)  # base product + the LoRA update
    assert all("forward" not in m.__dict__ for m in plain)


def test_without_torch_compile_decoding_falls_back(monkeypatch, capsys):
    def broken(fn, **kwargs):  # compiling happens at the first call, and fails there
        def call(*args):
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(mv, "_compiled", {})
    monkeypatch.setattr(mv, "_unavailable", False)
    monkeypatch.setattr(torch, "compile", broken)
    model = tiny("gpt")
    prompt = [3, 7, 11]
    assert generate_ids(model, prompt, max_new_tokens=10, temperature=0, compile=True) == \
        generate_ids(model, prompt, max_new_tokens=10, temperature=0)
    err = capsys.readouterr().err
    assert err.count("compiled decoding is unavailable") == 1 and "no C++ compiler" in err


def test_many_weight_shapes_compile_once_per_list_length():
    """Parameters of ten shapes (more than torch.compile's recompile limit of 8) all go
    through the compiled kernel: shapes stay symbolic, so no shape recompiles."""
    torch.manual_seed(0)
    shapes = [(5, 7), (9, 7), (11, 13), (3, 13), (40, 8), (8, 40), (17, 19), (23, 19), (2, 3), (4, 5)]
    with torch.inference_mode():
        for n, k in shapes:
            w, x = nn.Parameter(torch.randn(n, k)), torch.randn(k)
            for out in [mv.matvec(w, x), *mv.matvecs([w, w, w], x)]:
                assert torch.allclose(out, w @ x, atol=1e-5)
    assert not mv._unavailable  # never fell back
