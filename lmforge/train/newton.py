"""Second-order optimizers: exact damped Newton and Hessian-free Newton-CG (Martens 2010).

Both are `torch.optim.Optimizer`s driven by the loop's closure:

    closure(backward=True)   zero grads, loss.backward(), return the loss (what LBFGS calls)
    closure(backward=False)  return the loss with its autograd graph; these optimizers call
                             only this form and differentiate the loss themselves, so the
                             loop's gradient clipping and loss scaling never distort curvature
    optimizer.step(closure)  -> the loss before the step

Optional closure keywords, used when the closure's signature accepts them:

    closure(backward=False, return_outputs=True) -> (loss, logits)   enables Gauss–Newton
    closure(backward=False, fraction=0.25)       loss on the first quarter of the batch,
                                                 for curvature on a sub-batch (Martens 2010)

Every evaluation in one step restarts from the same RNG state, so dropout masks agree between
the gradient, the curvature products and the line search. Both optimizers keep all their
state in `self.state` (per-parameter tensors, plus scalars under the first parameter, as
`torch.optim.LBFGS` does), so `state_dict()` / `load_state_dict()` resume a run exactly.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable

import torch

from ..config import ConfigError
from .hvp import (GaussNewton, conjugate_gradient, double_backward_safe, exact_hessian,
                  fd_hessian_vector_product, flatten, gradient, hessian_vector_product,
                  set_flat_, unflatten)

Closure = Callable[..., torch.Tensor]


from .newton_steps import (_accepts, _adapt, _Evaluator, _line_search, _RngSnapshot,  # noqa: F401
                           _set_grads, _single_group, _with_grad)


# --------------------------------------------------------------------------- exact Newton


class Newton(torch.optim.Optimizer):
    """Exact damped Newton: solve (H + λI) d = -g with the full Hessian, then line search.

    For small parameter sets (a classifier head, logistic regression over frozen features):
    the Hessian costs n Hessian-vector products and n² memory, the solve n³/3 flops.

    Args:
        lr: first trial step length of the line search (1 = the full Newton step).
        damping: λ added to the Hessian's diagonal (Levenberg–Marquardt); adapted each step
            by the reduction ratio rho when `adaptive_damping` (x4 when rho < 1/4, /4 when
            rho > 3/4). An indefinite H + λI gets a larger λ until Cholesky succeeds.
        max_params: refuse more trainable parameters than this (the Hessian is n x n).
        line_search: backtracking Armijo search (c1, halving, `max_ls` trials) on the step.
        hessian_chunk: Hessian rows per batched backward pass (memory vs speed).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1.0, damping: float = 1e-4,
                 max_params: int = 5000, line_search: bool = True,
                 adaptive_damping: bool = True, c1: float = 1e-4, max_ls: int = 20,
                 hessian_chunk: int = 256) -> None:
        if lr <= 0 or damping < 0 or max_params <= 0 or hessian_chunk <= 0 or max_ls <= 0:
            raise ValueError("train.newton: lr, max_params, hessian_chunk and max_ls must be "
                             f"positive and damping >= 0 (got lr={lr}, damping={damping}, "
                             f"max_params={max_params}, hessian_chunk={hessian_chunk}, "
                             f"max_ls={max_ls})")
        super().__init__(params, dict(lr=lr))
        self.options = dict(damping=damping, line_search=line_search, c1=c1, max_ls=max_ls,
                            adaptive_damping=adaptive_damping, hessian_chunk=hessian_chunk)
        params = _single_group(self)
        n = sum(p.numel() for p in params)
        if n > max_params:
            gib = n * n * 4 / 2**30
            raise ConfigError(
                f"train.optimizer=newton: {n:,} trainable parameters exceed "
                f"train.newton.max_params={max_params:,} (the Hessian alone would be {n:,} x "
                f"{n:,}, {gib:,.1f} GiB in fp32); use train.optimizer=newton_cg (Hessian-free) "
                f"or raise train.newton.max_params")

    @torch.no_grad()
    def step(self, closure: Closure) -> torch.Tensor:  # type: ignore[override]
        """One damped Newton step; returns the loss before it."""
        if closure is None:
            raise ValueError("Newton.step needs a closure (see lmforge.train.newton)")
        opt = self.options
        params = _single_group(self)
        state = self.state[params[0]]
        damping = state.setdefault("damping", opt["damping"])
        evaluate = _Evaluator(closure, params[0].device)

        with torch.enable_grad(), double_backward_safe():
            loss = evaluate()
            g = gradient(loss, params, create_graph=True)  # (n,), differentiable
            hessian = exact_hessian(g, params, opt["hessian_chunk"]).double()  # (n, n)
        f0 = float(loss)
        g = g.detach()
        _set_grads(params, g)
        gd = g.double()
        state["step"] = state.get("step", 0) + 1
        if not math.isfinite(f0) or float(gd.norm()) == 0.0:
            return loss.detach()

        # (H + λI) d = -g by Cholesky; an indefinite matrix gets more damping until it is
        # positive definite (Nocedal & Wright, Algorithm 3.3)
        diag_scale = float(hessian.diagonal().abs().mean()) or 1.0
        eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
        lam = damping
        for _ in range(60):
            chol, info = torch.linalg.cholesky_ex(hessian + lam * eye)
            if int(info) == 0:
                break
            lam = max(4 * lam, 1e-6 * diag_scale)
        else:
            raise RuntimeError("newton: could not make H + λI positive definite "
                               "(is the Hessian finite?)")
        d = torch.cholesky_solve(-gd[:, None], chol)[:, 0]  # (n,)
        slope = float(gd @ d)  # < 0: a descent direction
        curv = float(d @ (hessian @ d))

        theta = flatten([p.detach() for p in params]).clone()

        def step_at(t: float) -> float:
            return evaluate.loss_at(params, theta + (t * d).to(theta.dtype))

        t0 = self.param_groups[0]["lr"]
        if opt["line_search"]:
            t, f_new, _ = _line_search(step_at, f0, slope, t0, c1=opt["c1"], shrink=0.5,
                                       max_evals=opt["max_ls"])
        else:
            t = t0
            f_new = step_at(t)
        set_flat_(params, theta + (t * d).to(theta.dtype))

        # reduction ratio: actual / predicted by the undamped quadratic model
        predicted = t * slope + 0.5 * t * t * curv
        rho = (f_new - f0) / predicted if t > 0 and predicted < 0 else -math.inf
        if opt["adaptive_damping"]:
            lam = _adapt(lam, rho, up=4.0, down=0.25, floor=1e-8 * diag_scale)
        state.update(damping=lam, rho=rho, step_size=t, loss=f_new)
        return loss.detach()


# --------------------------------------------------------------------------- Hessian-free


class NewtonCG(torch.optim.Optimizer):
    """Hessian-free Newton (Martens 2010): CG on (B + λI) d = -g with curvature products only.

    Each step: the loss and gradient; B = the Gauss–Newton matrix (when the closure can
    return logits) or the Hessian; preconditioned CG, warm-started from the previous
    direction, capped at `max_cg_iters` products; CG backtracking (the best of the iterates
    saved at ceil(1.3^j)); an Armijo line search; λ adapted by the reduction ratio rho.

    Args:
        lr: first trial step length of the line search (1 = the CG solution).
        damping: initial λ (Tikhonov damping); with `adaptive_damping` x3/2 when rho < 1/4 and
            x2/3 when rho > 3/4. Small because lmforge losses are means over tokens (Martens'
            λ = 45 was for sums); see docs/optimizers.md for measurements.
        max_cg_iters, cg_tol: CG iteration cap and relative-residual tolerance.
        curvature: "auto" (Gauss–Newton if the closure accepts `return_outputs`, else
            Hessian), "gn" or "hessian".
        products: "fd" (central differences of gradients, or of outputs for Gauss–Newton:
            first-order autodiff only, so any model and any fused kernel; as fast as or faster
            than double backward, 5x for an LSTM on CPU), "exact" (double backward,
            Pearlmutter; exact but needs differentiable-twice kernels) or "auto" (exact, and
            finite differences from the first failure on).
        preconditioner: M = (v + λ)^0.75 with v a running mean of a diagonal estimate:
            "hutchinson" (|z * Bz| for random signs z: the curvature's own diagonal, one extra
            product per step), "diag" (Martens: squared gradients; with mini-batch mean losses
            g² is far below λ and M ≈ I), or None.
        curvature_fraction: curvature on this leading fraction of the batch; needs a closure
            accepting `fraction` (1 = the whole batch, the same as the gradient).
        cg_decay: the warm start is cg_decay x the previous direction (Martens: 0.95).
        backtrack: choose among saved CG iterates by their loss (Martens, sec. 4.6).
        line_search: Armijo backtracking on the chosen direction (c1 = 1e-2, shrink 0.5).
    """

    CURVATURES = ("auto", "gn", "hessian")
    PRODUCTS = ("auto", "exact", "fd")
    PRECONDITIONERS = ("diag", "hutchinson", None)

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1.0, damping: float = 1e-3,
                 max_cg_iters: int = 50, cg_tol: float = 1e-4, curvature: str = "auto",
                 products: str = "fd", preconditioner: str | None = "hutchinson",
                 precond_decay: float = 0.95, precond_exponent: float = 0.75,
                 adaptive_damping: bool = True, min_damping: float = 1e-6,
                 curvature_fraction: float = 1.0, cg_decay: float = 0.95,
                 backtrack: bool = True, line_search: bool = True, c1: float = 1e-2,
                 max_ls: int = 10, fd_eps: float | None = None) -> None:
        if preconditioner in ("none", "None", ""):
            preconditioner = None
        checks = {"curvature": (curvature, self.CURVATURES), "products": (products, self.PRODUCTS),
                  "preconditioner": (preconditioner, self.PRECONDITIONERS)}
        for name, (value, valid) in checks.items():
            if value not in valid:
                raise ValueError(f"train.newton_cg.{name}={value!r} is not one of "
                                 f"{', '.join(map(str, valid))}")
        if lr <= 0 or damping < 0 or max_cg_iters <= 0 or max_ls <= 0:
            raise ValueError(f"train.newton_cg: lr, max_cg_iters, max_ls must be positive and "
                             f"damping >= 0 (got lr={lr}, max_cg_iters={max_cg_iters}, "
                             f"max_ls={max_ls}, damping={damping})")
        if not 0 < curvature_fraction <= 1:
            raise ValueError(f"train.newton_cg.curvature_fraction must be in (0, 1], got "
                             f"{curvature_fraction}")
        super().__init__(params, dict(lr=lr))
        self.options = dict(
            damping=damping, max_cg_iters=max_cg_iters, cg_tol=cg_tol, curvature=curvature,
            products=products, preconditioner=preconditioner, precond_decay=precond_decay,
            precond_exponent=precond_exponent, adaptive_damping=adaptive_damping,
            min_damping=min_damping, curvature_fraction=curvature_fraction, cg_decay=cg_decay,
            backtrack=backtrack, line_search=line_search, c1=c1, max_ls=max_ls, fd_eps=fd_eps)
        _single_group(self)

    # ------------------------------------------------------------------ curvature

    def _loss_and_products(self, evaluate: _Evaluator, params: list[torch.Tensor], state: dict):
        """Loss and gradient on the whole batch, and the product v -> B v (before damping)."""
        opt = self.options
        use_gn = opt["curvature"] == "gn" or (opt["curvature"] == "auto" and evaluate.has_outputs)
        if use_gn and not evaluate.has_outputs:
            raise ValueError("train.newton_cg.curvature='gn' needs a closure accepting "
                             "return_outputs=True and returning (loss, logits)")
        mode = opt["products"]
        exact = (state.get("products", "exact") if mode == "auto" else mode) == "exact"
        fraction = opt["curvature_fraction"]
        share = fraction == 1.0  # curvature on the gradient's own graph
        twice = double_backward_safe if exact else contextlib.nullcontext

        with torch.enable_grad(), (twice() if share else contextlib.nullcontext()):
            loss, out = evaluate(outputs=True) if use_gn else (evaluate(), None)
            if share and exact and not use_gn:  # Pearlmutter on the very same graph
                g = gradient(loss, params, create_graph=True)
                return loss, g.detach(), lambda v: hessian_vector_product(g, params, v)
            g = gradient(loss, params, retain_graph=share and use_gn)

        if use_gn:
            if not share:
                with torch.enable_grad(), twice():
                    loss_c, out_c = evaluate(outputs=True, fraction=fraction)
            else:
                loss_c, out_c = loss, out

            def outputs_at() -> torch.Tensor:
                with torch.no_grad():
                    return evaluate(outputs=True, fraction=fraction)[1]

            with torch.enable_grad():
                product = GaussNewton(loss_c, out_c, params, jvp="exact" if exact else "fd",
                                      outputs_at=outputs_at, eps=opt["fd_eps"])
            return loss, g, lambda v: _with_grad(product, v)
        if exact:  # Hessian of the sub-batch loss
            with torch.enable_grad(), twice():
                g_c = gradient(evaluate(fraction=fraction), params, create_graph=True)
            return loss, g, lambda v: hessian_vector_product(g_c, params, v)

        def grad_at() -> torch.Tensor:
            with torch.enable_grad():
                return gradient(evaluate(fraction=fraction), params)

        return loss, g, lambda v: fd_hessian_vector_product(grad_at, params, v, opt["fd_eps"])

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Closure) -> torch.Tensor:  # type: ignore[override]
        """One Hessian-free step; returns the loss before it."""
        if closure is None:
            raise ValueError("NewtonCG.step needs a closure (see lmforge.train.newton)")
        opt = self.options
        params = _single_group(self)
        state = self.state[params[0]]
        damping = state.setdefault("damping", opt["damping"])
        evaluate = _Evaluator(closure, params[0].device)
        if opt["curvature_fraction"] < 1.0 and not evaluate.has_fraction:
            raise ValueError("train.newton_cg.curvature_fraction < 1 needs a closure accepting "
                             "fraction= (the loss on that leading fraction of the batch)")

        loss, g, product = self._checked_products(evaluate, params, state)
        f0 = float(loss)
        g = g.detach()
        _set_grads(params, g)
        state["step"] = state.get("step", 0) + 1
        if not math.isfinite(f0) or float(g.norm()) == 0.0:
            return loss.detach()

        precond = self._preconditioner(params, g, product, damping)
        previous = [self.state[p].get("cg_prev") for p in params]
        x0 = None
        if all(d is not None for d in previous):
            x0 = opt["cg_decay"] * flatten(previous).to(g.dtype)
        result = conjugate_gradient(lambda v: product(v) + damping * v, -g, x0,
                                    max_iters=opt["max_cg_iters"], tol=opt["cg_tol"],
                                    precond=precond, save_gamma=1.3 if opt["backtrack"] else None)
        for p, chunk in zip(params, unflatten(result.x, params)):
            self.state[p]["cg_prev"] = chunk.clone()

        theta = flatten([p.detach() for p in params]).clone()
        lr = self.param_groups[0]["lr"]

        def f_at(x: torch.Tensor, t: float = 1.0) -> float:
            return evaluate.loss_at(params, theta + (t * lr * x).to(theta.dtype))

        # CG backtracking: from the last saved iterate back while the loss keeps falling
        candidates = result.iterates if opt["backtrack"] else result.iterates[-1:]
        _, x, phi = candidates[-1]
        f_x = f_at(x)
        for _, x_prev, phi_prev in reversed(candidates[:-1]):
            f_prev = f_at(x_prev)
            if not f_prev < f_x:
                break
            x, phi, f_x = x_prev, phi_prev, f_prev

        # rho: actual reduction / reduction predicted by the undamped quadratic model
        gx = float(g @ x)
        curv = 2 * (phi - gx) - damping * float(x @ x)  # xᵀBx from φ = ½xᵀ(B+λI)x + gᵀx
        predicted = lr * gx + 0.5 * lr * lr * curv
        rho = (f_x - f0) / predicted if predicted < 0 else -math.inf

        if not opt["line_search"]:
            t, f_new = 1.0, f_x
        elif gx < 0:
            t, f_new, _ = _line_search(lambda t: f_at(x, t), f0, lr * gx, 1.0, c1=opt["c1"],
                                       shrink=0.5, max_evals=opt["max_ls"], first=f_x)
        else:
            t, f_new = 0.0, f0  # not a descent direction: stay, and damp harder
        set_flat_(params, theta + (t * lr * x).to(theta.dtype))

        if opt["adaptive_damping"]:
            damping = _adapt(damping, rho, up=1.5, down=2 / 3, floor=opt["min_damping"])
        state.update(damping=damping, rho=rho, cg_iters=result.iterations,
                     cg_residual=result.residual, step_size=t * lr, loss=f_new)
        return loss.detach()

    def _checked_products(self, evaluate: _Evaluator, params: list[torch.Tensor], state: dict):
        """`_loss_and_products`; in products='auto', fall back to finite differences for good
        when the model cannot be differentiated twice."""
        if self.options["products"] != "auto" or "products" in state:
            return self._loss_and_products(evaluate, params, state)
        try:
            loss, g, product = self._loss_and_products(evaluate, params, state)
            product(g)  # probe one exact product
            state["products"] = "exact"
            return loss, g, product
        except (RuntimeError, NotImplementedError) as err:
            warnings.warn(f"newton_cg: exact curvature products failed ({str(err)[:120]}); "
                          "using finite differences (products='fd')", stacklevel=3)
            state["products"] = "fd"
            return self._loss_and_products(evaluate, params, state)

    def _preconditioner(self, params: list[torch.Tensor], g: torch.Tensor,
                        product: Callable[[torch.Tensor], torch.Tensor],
                        damping: float) -> torch.Tensor | None:
        """Diagonal M = (v + λ)^ξ, v a running mean of a diagonal estimate (Martens, sec. 4.7)."""
        kind = self.options["preconditioner"]
        if kind is None:
            return None
        if kind == "diag":
            estimate = g * g  # Martens' empirical-Fisher diagonal, from the batch gradient
        else:  # Hutchinson: E[z * Bz] = diag(B) for random signs z (Bekas et al. 2007)
            z = torch.randint_like(g, 2) * 2 - 1
            estimate = (z * product(z)).abs()
        beta = self.options["precond_decay"]
        old = [self.state[p].get("precond") for p in params]
        v = estimate if any(o is None for o in old) else (
            beta * flatten(old).to(g.dtype) + (1 - beta) * estimate)  # running mean, (n,)
        for p, chunk in zip(params, unflatten(v, params)):
            self.state[p]["precond"] = chunk.clone()
        return (v + damping).pow(self.options["precond_exponent"])
