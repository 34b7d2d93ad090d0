"""Chunked cross-entropy equals the plain full-logits loss, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.models.build import build_model
from lmforge.nn.chunked_ce import (auto_chunk_size, chunked_cross_entropy,
                                   chunked_token_logprobs)

B, T, D, V = 3, 7, 16, 50


def _inputs(ignore_fraction: float = 0.3):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, T, D, generator=g, requires_grad=True)
    weight = (0.5 * torch.randn(V, D, generator=g)).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[torch.rand(B, T, generator=g) < ignore_fraction] = -100
    return hidden, weight, targets


def _plain(hidden, weight, targets):
    logits = hidden @ weight.T  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


@pytest.mark.parametrize("chunk_size", [1, 4, None, 1000])
def test_loss_and_gradients_equal_plain(chunk_size):
    hidden, weight, targets = _inputs()
    ref = _plain(hidden, weight, targets)
    ref_gh, ref_gw = torch.autograd.grad(ref, (hidden, weight))
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gh, ref_gh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, ref_gw, atol=1e-5, rtol=1e-5)


def test_token_logprobs_and_their_gradient():
    hidden, weight, targets = _inputs()
    logp = torch.log_softmax(hidden @ weight.T, dim=-1)  # (B, T, V)
    keep = targets != -100
    ref = torch.where(keep, logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0], 0.0)
    got = chunked_token_logprobs(hidden, weight, targets, chunk_size=5)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got[~keep] == 0).all()
    # a DPO-like weighted sum of per-sequence log-likelihoods backpropagates identically
    coeff = torch.tensor([1.0, -2.0, 0.5])
    ref_g = torch.autograd.grad((ref.sum(1) * coeff).sum(), (hidden, weight))
    got_g = torch.autograd.grad((got.sum(1) * coeff).sum(), (hidden, weight))
    for a, b in zip(got_g, ref_g):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_ignored_positions_are_never_projected():
    hidden, weight, targets = _inputs()
    with torch.no_grad():
        hidden[targets == -100] = float("nan")  # would poison any logits computed from them
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_size=4)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    assert torch.isfinite(loss) and torch.isfinite(gw).all()
    assert (gh[targets == -100] == 0).all() and torch.isfinite(gh[targets != -100]).all()


def test_frozen_weight_gets_no_gradient_and_all_ignored_is_nan():
    hidden, weight, targets = _inputs()
    weight = weight.detach()
    loss = chunked_cross_entropy(hidden, weight, targets)
    (gh,) = torch.autograd.grad(loss, hidden)
    ref_gh = torch.autograd.grad(_plain(hidden, weight, targets), hidden)[0]
    torch.testing.assert_close(gh, ref_gh, atol=1e-5, rtol=1e-5)
    all_ignored = torch.full_like(targets, -100)
    assert torch.isnan(chunked_cross_entropy(hidden, weight, all_ignored))
    assert torch.isnan(_plain(hidden, weight, all_ignored))


def test_bf16_autocast_matches_plain_autocast():
    hidden, weight, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _plain(hidden, weight, targets)
        loss = chunked_cross_entropy(hidden, weight, targets, chunk_size=4)
    ref_g = torch.autograd.grad(ref, (hidden, weight))
    got_g = torch.autograd.grad(loss, (hidden, weight))
    # both project in bf16 and soft-max in fp32; only the order of the bf16 sums differs
    torch.testing.assert_close(loss, ref, atol=1e-2, rtol=1e-2)
    for a, b in zip(got_g, ref_g):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-2)


def test_causal_lm_chunked_loss_equals_plain_with_tied_embedding():
    cfg = ModelConfig(arch="gpt", vocab_size=V, d_model=16, n_layers=2, n_heads=2, max_len=T)
    model = build_model(cfg)
    assert model.lm_head.weight is model.backbone.embed.weight
    ids = torch.randint(0, V, (B, T))
    *_, targets = _inputs()
    _, ref = model(ids, targets)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    model.chunked_loss = True
    logits, loss = model(ids, targets)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert logits is None  # the full logits were never built
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):  # the tied embedding gets both of its gradients
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_auto_chunk_size_bounds():
    assert auto_chunk_size(10, 50, 16) == 10  # never more rows than there are
    assert auto_chunk_size(8192, 151936, 896) == 55
    assert auto_chunk_size(65536, 49152, 576) == 65536 * 576 // 49152
