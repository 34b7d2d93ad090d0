"""One-row Llama decoding through one compiled call per block (`--compile`,
models/llama_step.py): the same hidden states and cache as the eager block for every variant
of the family, the same tokens end to end, and the eager path wherever it does not apply."""

from __future__ import annotations

import copy

import pytest
import torch

from lmforge.generate import DecodeOptions, generate_ids
from lmforge.generate.causal import generate_tokens
from lmforge.models import llama_step
from lmforge.models.build import build_model
from lmforge.nn import matvec as mv
from lmforge.nn.lora import apply_lora
from lmforge.nn.matvec import matvec_linears
from tests.models.test_llama import VARIANTS, tiny


@pytest.fixture(autouse=True)
def fresh_compiler(monkeypatch):
    """torch.compile allows 8 variants of one function per process (then decoding falls back
    to eager, warned); each test starts with none, as a decoding process does."""
    torch._dynamo.reset()
    monkeypatch.setattr(mv, "_unavailable", False)


def counted(monkeypatch) -> list[int]:
    """Patch block_step to count the calls that ran the compiled block."""
    calls: list[int] = []
    real = llama_step.block_step

    def spy(block, x, cache):
        out = real(block, x, cache)
        calls.append(out is not None)
        return out

    monkeypatch.setattr("lmforge.models.llama.block_step", spy)
    return calls


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compiled_block_step_equals_the_eager_block(variant, dtype, tol, monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny(**VARIANTS[variant], max_len=48)).eval().to(dtype)
    backbone = model.backbone
    ids = torch.randint(0, 37, (1, 11))  # longer than the Mistral window of 5
    calls = counted(monkeypatch)
    with torch.inference_mode():
        state = backbone.init_state(1, max_len=20, dtype=dtype)
        backbone(ids, state=state)
        twin = copy.deepcopy(state)
        for step in range(3):
            nxt = torch.tensor([[step + 5]])
            want, _ = backbone(nxt, state=twin)  # eager: no matvec_linears block
            with matvec_linears(model):
                got, _ = backbone(nxt, state=state)
            torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)
            for ours, theirs in zip(state, twin):
                assert ours.length == theirs.length == 12 + step
                torch.testing.assert_close(ours.k.float(), theirs.k.float(), atol=tol, rtol=tol)
                torch.testing.assert_close(ours.v.float(), theirs.v.float(), atol=tol, rtol=tol)
    assert calls == [True] * 6  # 2 layers x 3 steps, all compiled


@pytest.mark.parametrize("variant", ["gqa", "qwen3-qknorm-headdim", "mistral-window"])
def test_compiled_decoding_gives_the_same_tokens(variant, monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny(**VARIANTS[variant], max_len=64)).eval()
    prompt = [3, 7, 11, 2, 9]
    plain = generate_ids(model, prompt, max_new_tokens=40, temperature=0)
    calls = counted(monkeypatch)
    assert generate_ids(model, prompt, max_new_tokens=40, temperature=0, compile=True) == plain
    assert len(calls) == 2 * 39 and all(calls)  # every step after the prefill, both layers
    opts = dict(max_new_tokens=20, temperature=0.8, top_k=10, seed=3)
    assert generate_ids(model, prompt, compile=True, **opts) == generate_ids(model, prompt, **opts)


def test_context_full_slides_the_window_as_the_eager_path_does():
    torch.manual_seed(0)
    model = build_model(tiny(max_len=16)).eval()
    prompt = [3, 7, 11, 2, 9, 4, 4, 1]
    plain = generate_ids(model, prompt, max_new_tokens=30, temperature=0)
    assert generate_ids(model, prompt, max_new_tokens=30, temperature=0, compile=True) == plain


def test_batches_lora_and_training_take_the_eager_block(monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny(max_len=64)).eval()
    calls = counted(monkeypatch)
    prompts = [[3, 7, 11], [5, 2]]  # a ragged batch: two rows and a mask
    options = [DecodeOptions(max_new_tokens=8, temperature=0, compile=c) for c in (False, True)]
    a, b = (generate_tokens(model, prompts, o) for o in options)
    assert [h[0].tokens for h in a] == [h[0].tokens for h in b] and calls == []
    lora = copy.deepcopy(model)
    apply_lora(lora.backbone, rank=2, alpha=4, targets=["attn.q", "attn.v"])
    for p in lora.parameters():  # a LoRA update that changes the output
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.5)
    prompt = [3, 7, 11]
    assert generate_ids(lora, prompt, max_new_tokens=12, temperature=0, compile=True) == \
        generate_ids(lora, prompt, max_new_tokens=12, temperature=0)
    assert calls == []  # the wrapped q/v layers keep their own forward
    state = model.backbone.init_state(1)  # with autograd on (training, a gradient check)
    with matvec_linears(model):
        model.backbone(torch.tensor([[3, 7]]), state=state)
        step, _ = model.backbone(torch.tensor([[11]]), state=state)
    assert calls == [] and step.requires_grad  # the compiled block would pass no gradient


def test_a_full_cache_is_refused_with_a_clear_message():
    model = build_model(tiny(max_len=32)).eval()
    state = model.backbone.init_state(1, max_len=4)
    with torch.inference_mode(), matvec_linears(model):
        model.backbone(torch.tensor([[1, 2, 3, 4]]), state=state)
        with pytest.raises(ValueError, match="KV cache full: 4 \\+ 1 > 4"):
            model.backbone(torch.tensor([[5]]), state=state)
