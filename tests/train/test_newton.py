"""Newton and Newton-CG: known answers, an independent solver, learning, exact resume."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from torch import nn

from lmforge.config import ConfigError, ModelConfig, TrainConfig
from lmforge.models.build import build_model
from lmforge.train.newton import Newton, NewtonCG
from lmforge.train.optim import build_optimizer


def make_closure(optimizer: torch.optim.Optimizer, loss_fn):
    """The loop's closure contract around a loss function of no arguments."""

    def closure(backward: bool = True) -> torch.Tensor:
        if not backward:
            return loss_fn()
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss.detach()

    return closure


# --------------------------------------------------------------------------- exact Newton


def test_newton_solves_a_quadratic_in_one_step():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    a = q @ torch.diag(torch.logspace(-2, 2, 10, dtype=torch.float64)) @ q.T  # cond 1e4
    b = torch.randn(10, dtype=torch.float64)
    theta = nn.Parameter(torch.randn(10, dtype=torch.float64))
    opt = Newton([theta], damping=0.0)
    opt.step(make_closure(opt, lambda: 0.5 * theta @ a @ theta - b @ theta))
    torch.testing.assert_close(theta.detach(), torch.linalg.solve(a, b), rtol=1e-10, atol=1e-10)
    assert opt.state[theta]["step_size"] == 1.0  # the full step, no backtracking


def _logistic_data(n: int = 200, d: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    p = torch.sigmoid(x @ w_true + 0.3)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < p).double()  # noisy: not separable
    return x, y


def test_newton_logistic_regression_matches_scipy():
    x, y = _logistic_data()
    model = nn.Linear(x.shape[1], 1).double()
    nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
    params = list(model.parameters())
    loss_fn = lambda: F.binary_cross_entropy_with_logits(model(x)[:, 0], y)  # noqa: E731
    opt = Newton(params)
    closure = make_closure(opt, loss_fn)
    for _ in range(10):
        opt.step(closure)
        loss = loss_fn()
        gnorm = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]).norm()
        if gnorm < 1e-8:
            break
    assert gnorm < 1e-8, f"gradient norm {gnorm:.2e} after 10 Newton steps"

    xn, yn = np.c_[x.numpy(), np.ones(len(x))], y.numpy()

    def f(w):  # the same mean logistic loss, with its gradient, in numpy
        z = xn @ w
        return (np.logaddexp(0, z) - yn * z).mean(), xn.T @ (1 / (1 + np.exp(-z)) - yn) / len(yn)

    ref = minimize(f, np.zeros(xn.shape[1]), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000})
    ours = np.r_[model.weight.detach().numpy()[0], model.bias.detach().numpy()]
    np.testing.assert_allclose(ours, ref.x, atol=1e-5)


def test_newton_handles_a_nonconvex_valley():
    # Rosenbrock from the textbook start: indefinite Hessians, needs damping and line search
    theta = nn.Parameter(torch.tensor([-1.2, 1.0], dtype=torch.float64))
    opt = Newton([theta])
    closure = make_closure(opt, lambda: (1 - theta[0]) ** 2 + 100 * (theta[1] - theta[0] ** 2) ** 2)
    for _ in range(40):
        opt.step(closure)
    torch.testing.assert_close(theta.detach(), torch.ones(2, dtype=torch.float64), atol=1e-6,
                               rtol=0)


def test_newton_refuses_too_many_parameters():
    model = nn.Linear(100, 60)  # 6,060 parameters
    with pytest.raises(ConfigError, match=r"6,060 .*max_params=5,000.*newton_cg"):
        Newton(model.parameters())
    with pytest.raises(ConfigError, match="train.newton.max_params"):
        build_optimizer(model, TrainConfig(optimizer="newton", newton={"max_params": 100}))
    assert isinstance(build_optimizer(model, TrainConfig(optimizer="newton",
                                                         newton={"max_params": 7000})), Newton)


# --------------------------------------------------------------------------- a tiny RNN LM


class TinyRNNLM(nn.Module):
    """Embedding -> torch LSTM/RNN -> vocab projection; (logits, loss) like lmforge heads."""

    def __init__(self, vocab: int = 12, width: int = 16, cell: type = nn.LSTM) -> None:
        super().__init__()
        self.embed, self.rnn = nn.Embedding(vocab, width), cell(width, width, batch_first=True)
        self.out = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor):
        hidden, _ = self.rnn(self.embed(ids))  # (B, T, D)
        logits = self.out(hidden)  # (B, T, V)
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _lm_batch(batch: int = 8, length: int = 16, vocab: int = 12):
    """Sequences that count upward mod `vocab` from a random start: learnable, not trivial."""
    start = torch.randint(0, vocab, (batch, 1))
    seq = (start + torch.arange(length + 1)) % vocab  # (B, T + 1)
    return seq[:, :-1], seq[:, 1:]


def _lm_closure(opt, model, ids, targets, rich: bool = False):
    def closure(backward: bool = True, return_outputs: bool = False, fraction: float = 1.0):
        n = max(1, int(round(fraction * len(ids))))
        logits, loss = model(ids[:n], targets[:n])
        if not backward:
            return (loss, logits) if return_outputs else loss
        opt.zero_grad()
        loss.backward()
        return loss.detach()

    if rich:
        return closure
    return lambda backward=True: closure(backward)  # the loop's plain contract


def _train(model, opt, steps: int, rich: bool = False) -> tuple[float, float]:
    ids, targets = _lm_batch()
    with torch.no_grad():
        first = float(model(ids, targets)[1])
    for _ in range(steps):
        opt.step(_lm_closure(opt, model, ids, targets, rich))
    with torch.no_grad():
        return first, float(model(ids, targets)[1])


@pytest.mark.parametrize("cell,options,rich", [
    # (double backward through CPU LSTM kernels is slow: exact products use nn.RNN here)
    (nn.RNN, {"products": "exact"}, False),  # Hessian by double backward, the plain closure
    (nn.LSTM, {"products": "fd", "preconditioner": "diag"}, False),  # finite differences
    (nn.RNN, {"curvature": "gn", "products": "exact", "preconditioner": None}, True),  # exact J v
    (nn.LSTM, {"curvature": "gn"}, True),  # Gauss–Newton, J v by differences (the defaults)
])
def test_newton_cg_trains_tiny_rnn_lm(cell, options, rich):
    model = TinyRNNLM(cell=cell)
    opt = NewtonCG(model.parameters(), max_cg_iters=20, **options)
    first, last = _train(model, opt, steps=6, rich=rich)
    assert last < 0.6 * first, (first, last)
    state = opt.state[next(model.parameters())]
    assert 0 < state["cg_iters"] <= 20 and state["damping"] > 0


def test_lbfgs_trains_tiny_rnn_lm():
    model = TinyRNNLM(cell=nn.RNN)
    # max_eval explicit: torch caps the strong-Wolfe search at max_eval - 1 evaluations
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=5, max_eval=25,
                            history_size=20, line_search_fn="strong_wolfe")
    first, last = _train(model, opt, steps=6)
    assert last < 0.6 * first, (first, last)


def test_bad_options_name_the_field():
    params = list(nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match=r"train.newton_cg.curvature='fisher' is not one of"):
        NewtonCG(params, curvature="fisher")
    with pytest.raises(ValueError, match=r"train.newton_cg.curvature_fraction"):
        NewtonCG(params, curvature_fraction=0.0)
    with pytest.raises(ConfigError, match=r"train.newton_cg: .*unexpected keyword.*bogus"):
        build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="newton_cg",
                                                     newton_cg={"bogus": 1}))


def test_newton_cg_curvature_on_a_sub_batch():
    model = TinyRNNLM()
    opt = NewtonCG(model.parameters(), max_cg_iters=20, curvature_fraction=0.25)
    first, last = _train(model, opt, steps=6, rich=True)
    assert last < 0.6 * first
    with pytest.raises(ValueError, match="fraction"):  # the plain closure cannot do it
        _train(model, NewtonCG(model.parameters(), curvature_fraction=0.25), steps=1)


def test_newton_cg_on_gpt_uses_exact_products():
    cfg = ModelConfig(arch="gpt", vocab_size=12, d_model=16, n_layers=1, n_heads=2, max_len=16)
    model = build_model(cfg)  # flash attention on CPU: exact only inside double_backward_safe
    opt = build_optimizer(model, TrainConfig(optimizer="newton_cg",
                                             newton_cg={"max_cg_iters": 10, "products": "auto"}))
    assert isinstance(opt, NewtonCG)
    first, last = _train(model, opt, steps=3)
    assert last < first
    assert opt.state[opt.param_groups[0]["params"][0]]["products"] == "exact"



class _TanhGrad(torch.autograd.Function):
    """The backward of tanh as a kernel with no derivative of its own (like flash attention)."""

    @staticmethod
    def forward(ctx, grad, y):
        return grad * (1 - y * y)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("derivative for tanh_backward_kernel is not implemented")


class _NoDoubleBackward(torch.autograd.Function):
    """tanh whose backward cannot itself be differentiated."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return _TanhGrad.apply(grad, y)


def test_newton_cg_falls_back_to_finite_differences():
    model = nn.Sequential(nn.Linear(5, 8), nn.Linear(8, 3))
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    loss_fn = lambda: F.cross_entropy(model[1](_NoDoubleBackward.apply(model[0](x))), y)  # noqa
    opt = NewtonCG(model.parameters(), max_cg_iters=20, products="auto")
    first = float(loss_fn().detach())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            opt.step(make_closure(opt, loss_fn))
    assert sum("finite differences" in str(w.message) for w in caught) == 1
    assert opt.state[model[0].weight]["products"] == "fd"
    assert float(loss_fn().detach()) < 0.9 * first


def test_newton_cg_reaches_the_logistic_optimum():
    x, y = _logistic_data()
    model = nn.Linear(x.shape[1], 1).double()
    loss_fn = lambda: F.binary_cross_entropy_with_logits(model(x)[:, 0], y)  # noqa: E731
    opt = NewtonCG(model.parameters(), damping=1e-3, cg_tol=1e-10, products="exact")
    for _ in range(15):
        opt.step(make_closure(opt, loss_fn))
    grads = torch.autograd.grad(loss_fn(), list(model.parameters()))
    assert torch.cat([g.flatten() for g in grads]).norm() < 1e-6


# --------------------------------------------------------------------------- exact resume


class _DropoutMLP(nn.Module):
    """A small classifier with dropout: resuming must replay the same masks."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        logits = self.net(x)
        return logits, F.cross_entropy(logits, y)


@pytest.mark.parametrize("make", [
    lambda p: Newton(p),
    lambda p: NewtonCG(p, max_cg_iters=10, preconditioner="hutchinson"),
    lambda p: NewtonCG(p, max_cg_iters=10, products="exact"),
])
def test_state_dict_resumes_exactly(make):
    def run(model, opt, steps):
        for _ in range(steps):
            x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
            opt.step(_lm_closure(opt, model, x, y))

    torch.manual_seed(3)
    model = _DropoutMLP()
    opt = make(model.parameters())
    run(model, opt, 2)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state dicts
    torch.manual_seed(4)
    run(model, opt, 2)  # the uninterrupted run

    resumed = _DropoutMLP()
    resumed.load_state_dict(saved_model)
    opt2 = make(resumed.parameters())
    opt2.load_state_dict(saved_opt)
    torch.manual_seed(4)
    run(resumed, opt2, 2)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert opt.state_dict()["state"][0]["step"] == 4
