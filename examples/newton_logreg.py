"""Logistic regression: Newton's method against gradient descent, in steps to convergence.

Shows lmforge's exact damped Newton optimizer (`lmforge.train.newton.Newton`, a
`torch.optim.Optimizer`) driven by the same closure as plain gradient descent. On a strictly
convex problem (L2-regularised logistic regression, features on very different scales)
Newton converges quadratically: the gap to the optimum f(w) - f* squares at every step, and a
handful of steps reach machine precision. Gradient descent at its best safe fixed step, 1/L
(L = the largest curvature), needs thousands: its rate is set by the condition number.

Time on 2 CPU cores: about 20 seconds (measured: Newton 6 steps in 0.2 s, gradient descent
43,134 steps; 20 s of CPU on one thread); `--quick`: a smaller problem, seconds.

    python examples/newton_logreg.py [--quick]
"""

import argparse
import time

import torch
import torch.nn.functional as F

from lmforge.train.newton import Newton

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a smaller problem")
args = parser.parse_args()
n, d, max_gd_steps = (500, 10, 5_000) if args.quick else (5_000, 40, 50_000)
L2, TOL = 1e-3, 1e-8  # regularisation; "converged" means f(w) - f* < TOL

torch.manual_seed(0)
f64 = torch.float64  # so the gap to the optimum can shrink to 1e-12
scale = torch.logspace(0, 1.5, d, dtype=f64)  # feature j ranges over 1x .. 30x: an ill-conditioned problem
X = torch.randn(n, d, dtype=f64) * scale  # (n, d)
w_true = torch.randn(d, dtype=f64) / scale  # every feature matters about equally
y = ((X @ w_true) / d**0.5 + 0.5 * torch.randn(n, dtype=f64) > 0).double()  # (n,) noisy labels 0 / 1


def objective(model: torch.nn.Linear) -> torch.Tensor:
    """Mean logistic loss + (L2 / 2) |w|^2, the weights only (not the bias)."""
    logits = model(X)[:, 0]  # (n,)
    return F.binary_cross_entropy_with_logits(logits, y) + 0.5 * L2 * model.weight.pow(2).sum()


def minimise(make_optimizer, max_steps: int, f_star: float = float("-inf")) -> list[float]:
    """Run from w = 0 until f - f* < TOL (or max_steps); returns f after each step."""
    model = torch.nn.Linear(d, 1, dtype=f64)
    for p in model.parameters():  # start from w = 0, b = 0
        torch.nn.init.zeros_(p)
    optimizer = make_optimizer(model.parameters())

    def closure(backward: bool = True) -> torch.Tensor:  # the Trainer's closure contract
        loss = objective(model)
        if backward:  # first-order methods: gradients in .grad
            optimizer.zero_grad()
            loss.backward()
        return loss  # Newton calls closure(backward=False) and differentiates it itself

    history = [objective(model).item()]
    while len(history) <= max_steps and history[-1] - f_star >= TOL:
        optimizer.step(closure)
        history.append(objective(model).item())
    return history


# f*: Newton run to convergence (30 steps is far more than it needs)
f_star = minimise(lambda p: Newton(p, damping=0.0), 30)[-1]

# gradient descent (lmforge's `gd` is torch's SGD without momentum) at the step 1/L, where
# L = the largest eigenvalue of X'X / 4n + L2, an upper bound on the Hessian
Xb = torch.cat([X, torch.ones(n, 1, dtype=f64)], 1)  # (n, d + 1) with the bias column
L = torch.linalg.eigvalsh(Xb.T @ Xb / (4 * n)).max().item() + L2
t0 = time.perf_counter()
gd = minimise(lambda p: torch.optim.SGD(p, lr=1.0 / L), max_gd_steps, f_star)
t_gd = time.perf_counter() - t0
t0 = time.perf_counter()
newton = minimise(lambda p: Newton(p, damping=0.0), 30, f_star)
t_newton = time.perf_counter() - t0

print(f"logistic regression: {n:,} examples, {d} features, f* = {f_star:.12f}\n")
print("step   Newton f - f*      gradient descent f - f*")
for step in range(len(newton)):
    print(f"{step:4d}   {newton[step] - f_star:14.3e}    {gd[step] - f_star:14.3e}")
gd_result = f"{len(gd) - 1:,}" if gd[-1] - f_star < TOL else \
    f"more than {max_gd_steps:,} (still {gd[-1] - f_star:.1e} away)"
print(f"\nsteps to f - f* < {TOL:g}: Newton {len(newton) - 1} ({t_newton:.2f}s), "
      f"gradient descent (lr 1/L = {1 / L:.3g}) {gd_result} ({t_gd:.2f}s)")
