"""Curvature products against finite differences and explicit matrices; CG on known systems."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.train.hvp import (GaussNewton, conjugate_gradient, double_backward_safe,
                               exact_hessian, fd_hessian_vector_product, flatten, gradient,
                               hessian_vector_product, set_flat_, unflatten)


def _mlp(dtype=torch.float64) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def _data(dtype=torch.float64):
    return torch.randn(16, 4, dtype=dtype), torch.randint(0, 3, (16,))


def test_flatten_round_trip():
    tensors = [torch.randn(2, 3), torch.randn(4), torch.randn(1, 1, 2)]
    vec = flatten(tensors)
    assert vec.shape == (12,)
    for a, b in zip(unflatten(vec, tensors), tensors):
        assert torch.equal(a, b)


def test_exact_hvp_matches_finite_difference_of_gradients():
    model, (x, y) = _mlp(), _data()
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), y)
    g = gradient(loss, params, create_graph=True)
    v = torch.randn_like(g)
    hv = hessian_vector_product(g, params, v)

    # central difference of the gradient, done by hand (no library code involved)
    theta, h = flatten([p.detach() for p in params]).clone(), 1e-5
    grads = []
    for sign in (1, -1):
        set_flat_(params, theta + sign * h * v)
        grads.append(gradient(F.cross_entropy(model(x), y), params))
    set_flat_(params, theta)
    torch.testing.assert_close(hv, (grads[0] - grads[1]) / (2 * h), rtol=1e-6, atol=1e-8)


def test_exact_hessian_matches_torch_functional():
    model, (x, y) = _mlp(), _data()
    params = list(model.parameters())
    theta = flatten([p.detach() for p in params]).clone()

    def f(flat):  # the loss as a function of the flat parameter vector
        w1, b1, w2, b2 = unflatten(flat, params)
        return F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)

    expected = torch.autograd.functional.hessian(f, theta)  # (n, n)
    g = gradient(F.cross_entropy(model(x), y), params, create_graph=True)
    torch.testing.assert_close(exact_hessian(g, params, chunk=7), expected, rtol=1e-9, atol=1e-12)


def test_fd_hvp_matches_exact_on_lstm_and_restores_params():
    torch.manual_seed(1)
    emb, lstm, out = nn.Embedding(7, 5), nn.LSTM(5, 8, batch_first=True), nn.Linear(8, 7)
    params = [*emb.parameters(), *lstm.parameters(), *out.parameters()]
    ids = torch.randint(0, 7, (3, 9))

    def loss_fn():
        h, _ = lstm(emb(ids[:, :-1]))
        return F.cross_entropy(out(h).flatten(0, 1), ids[:, 1:].flatten())

    before = [p.detach().clone() for p in params]
    v = torch.randn(sum(p.numel() for p in params))
    g = gradient(loss_fn(), params, create_graph=True)  # fused LSTM: CPU double backward works
    exact = hessian_vector_product(g, params, v)
    approx = fd_hessian_vector_product(lambda: gradient(loss_fn(), params), params, v)
    assert float((approx - exact).norm() / exact.norm()) < 2e-3  # float32 central difference
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_double_backward_safe_enables_hvp_through_attention():
    torch.manual_seed(2)
    proj = nn.Linear(8, 24)
    x = torch.randn(2, 5, 8)
    params = list(proj.parameters())

    def loss_fn():
        q, k, v = proj(x).view(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).pow(2).mean()

    with double_backward_safe():
        g = gradient(loss_fn(), params, create_graph=True)
    v = torch.randn_like(g)
    exact = hessian_vector_product(g, params, v)
    approx = fd_hessian_vector_product(lambda: gradient(loss_fn(), params), params, v)
    assert float((approx - exact).norm() / exact.norm()) < 2e-3


@pytest.mark.parametrize("jvp", ["exact", "fd"])
def test_gauss_newton_matches_explicit_jacobian(jvp):
    model, (x, y) = _mlp(), _data()
    params = list(model.parameters())
    theta = flatten([p.detach() for p in params]).clone()

    def logits_of(flat):
        w1, b1, w2, b2 = unflatten(flat, params)
        return torch.tanh(x @ w1.T + b1) @ w2.T + b2  # (N, C)

    jac = torch.autograd.functional.jacobian(logits_of, theta).reshape(-1, theta.numel())
    z = logits_of(theta).detach()
    h_l = torch.autograd.functional.hessian(
        lambda flat_z: F.cross_entropy(flat_z.view_as(z), y), z.reshape(-1))  # (NC, NC)
    expected_g = jac.T @ h_l @ jac  # (n, n)

    logits = model(x)
    product = GaussNewton(F.cross_entropy(logits, y), logits, params, jvp=jvp,
                          outputs_at=lambda: model(x).detach())
    v = torch.randn_like(theta)
    tol = 1e-9 if jvp == "exact" else 1e-6
    torch.testing.assert_close(product(v), expected_g @ v, rtol=tol, atol=tol)
    # Gauss–Newton is positive semi-definite
    assert float(v @ product(v)) >= 0


def _spd(n: int, cond: float, dtype=torch.float64) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=dtype))
    return q @ torch.diag(torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n,
                                         dtype=dtype)) @ q.T


def test_cg_solves_spd_system():
    a, b = _spd(30, 1e3), torch.randn(30, dtype=torch.float64)
    result = conjugate_gradient(lambda v: a @ v, b, max_iters=200, tol=1e-10, progress_tol=0)
    torch.testing.assert_close(result.x, torch.linalg.solve(a, b), rtol=1e-7, atol=1e-9)
    assert result.residual <= 1e-10 and not result.negative_curvature
    assert result.iterations <= 60  # exact arithmetic would need at most n = 30


def test_cg_preconditioner_and_warm_start():
    scales = torch.logspace(-3, 3, 40, dtype=torch.float64)
    a = torch.diag(scales) + 1e-3 * torch.ones(40, 40, dtype=torch.float64)  # badly scaled
    b = torch.randn(40, dtype=torch.float64)
    plain = conjugate_gradient(lambda v: a @ v, b, max_iters=200, tol=1e-8, progress_tol=0)
    jacobi = conjugate_gradient(lambda v: a @ v, b, max_iters=200, tol=1e-8, progress_tol=0,
                                precond=a.diagonal())
    assert jacobi.residual <= 1e-8 and jacobi.iterations < plain.iterations
    warm = conjugate_gradient(lambda v: a @ v, b, jacobi.x, max_iters=200, tol=1e-6)
    assert warm.iterations == 0
    # a warm start that is worse than zero is dropped
    bad = conjugate_gradient(lambda v: a @ v, b, -10 * jacobi.x, max_iters=200, tol=1e-8,
                             progress_tol=0, precond=a.diagonal())
    assert bad.iterations == jacobi.iterations


def test_cg_saves_iterates_and_stops_on_negative_curvature():
    a, b = _spd(60, 1e4), torch.randn(60, dtype=torch.float64)
    result = conjugate_gradient(lambda v: a @ v, b, max_iters=20, tol=0, progress_tol=0,
                                save_gamma=1.3)
    assert [i for i, _, _ in result.iterates] == [1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 20]
    phis = [phi for _, _, phi in result.iterates]
    assert all(later < earlier for earlier, later in zip(phis, phis[1:]))  # φ falls monotonically
    indefinite = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    result = conjugate_gradient(lambda v: indefinite @ v, torch.tensor([1.0, 2.0],
                                dtype=torch.float64), max_iters=10)
    assert result.negative_curvature
