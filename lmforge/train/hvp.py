"""Curvature-vector products and conjugate gradient: the building blocks of Newton methods.

Everything works on one flat vector over a list of parameters (`flatten` / `unflatten`).

    g = gradient(loss, params, create_graph=True)      # (n,), differentiable
    Hv = hessian_vector_product(g, params, v)          # Pearlmutter: d/dθ (g · v)
    Hv = fd_hessian_vector_product(grad_at, params, v) # (g(θ+εv) - g(θ-εv)) / 2ε, first order only
    Gv = GaussNewton(loss, logits, params)(v)          # Jᵀ H_L J v (Schraudolph 2002)
    result = conjugate_gradient(lambda x: Hv(x) + damping * x, -g, max_iters=50)

Exact products need double backward through the whole model. Fused kernels do not always
have it (flash / memory-efficient attention, cuDNN RNNs): evaluate the loss inside
`double_backward_safe()`, which selects differentiable-twice kernels, or use the
finite-difference products, which need only first-order gradients and so work for any model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- flat vectors


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector: shapes (2, 3), (4,) -> (10,)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like `like` (the inverse of `flatten`)."""
    out, start = [], 0
    for t in like:
        out.append(vec[start:start + t.numel()].view_as(t))
        start += t.numel()
    assert start == vec.numel(), f"vector of {vec.numel()} values for {start} parameters"
    return out


@torch.no_grad()
def set_flat_(params: Sequence[torch.Tensor], vec: torch.Tensor) -> None:
    """Copy a flat vector into the parameters, in place.

    Writes through `.data` on purpose: finite differences move the parameters and put them
    back while a graph built at the original values is still alive (Gauss–Newton's Jᵀ, the
    CG products); a tracked in-place write would bump the version counters and make autograd
    refuse that graph, though the values it saved are restored bit for bit before it runs.
    """
    for p, chunk in zip(params, unflatten(vec, params)):
        p.data.copy_(chunk)


@contextlib.contextmanager
def double_backward_safe() -> Iterator[None]:
    """Run the forward pass with kernels that can be differentiated twice.

    Flash / memory-efficient attention and cuDNN RNNs have no double backward; the math
    attention kernel and the native RNN kernels do. Only the forward pass needs this context.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]), torch.backends.cudnn.flags(enabled=False):
        yield


# --------------------------------------------------------------------------- gradients and Hessians


def gradient(loss: torch.Tensor, params: Sequence[torch.Tensor], *, create_graph: bool = False,
             retain_graph: bool | None = None) -> torch.Tensor:
    """d loss / d params as one flat vector (zeros for parameters the loss does not use)."""
    grads = torch.autograd.grad(loss, params, create_graph=create_graph,
                                retain_graph=retain_graph, allow_unused=True)
    return flatten([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)])


def hessian_vector_product(grad: torch.Tensor, params: Sequence[torch.Tensor],
                           v: torch.Tensor) -> torch.Tensor:
    """Exact H v from a gradient built with `create_graph=True` (Pearlmutter 1994).

    H v = d(g · v)/dθ: one extra backward pass through the gradient's graph, no n x n matrix.
    """
    hv = torch.autograd.grad(grad, params, grad_outputs=v, retain_graph=True, allow_unused=True)
    return flatten([torch.zeros_like(p) if h is None else h for p, h in zip(params, hv)])


def exact_hessian(grad: torch.Tensor, params: Sequence[torch.Tensor],
                  chunk: int = 256) -> torch.Tensor:
    """The full (n, n) Hessian from a differentiable gradient, `chunk` rows per backward pass.

    Rows are Hessian-vector products with unit vectors, batched through `torch.func`'s vmap
    (`is_grads_batched`); models whose ops cannot be vmapped fall back to one row at a time.
    """
    n = grad.numel()
    eye = torch.eye(n, dtype=grad.dtype, device=grad.device)
    rows = []
    for start in range(0, n, chunk):
        block = eye[start:start + chunk]  # (c, n)
        try:
            hv = torch.autograd.grad(grad, params, grad_outputs=block, retain_graph=True,
                                     allow_unused=True, is_grads_batched=True)
            c = block.shape[0]
            rows.append(torch.cat([torch.zeros(c, p.numel(), dtype=grad.dtype, device=grad.device)
                                   if h is None else h.reshape(c, -1)
                                   for p, h in zip(params, hv)], dim=1))  # (c, n)
        except RuntimeError:  # an op without a batching rule
            rows.extend(hessian_vector_product(grad, params, e)[None] for e in block)
    hessian = torch.cat(rows)  # (n, n)
    return 0.5 * (hessian + hessian.T)  # symmetric up to rounding; make it exactly so


def fd_step(params: Sequence[torch.Tensor], v: torch.Tensor, eps: float | None = None) -> float:
    """Step size h for a central difference along v (Nocedal & Wright, eq. 8.6, central form).

    h = eps^(1/3) (1 + |θ|) / |v| balances truncation error O(h²) against rounding O(eps / h).
    """
    theta_norm = math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in params))
    machine = torch.finfo(v.dtype).eps
    base = eps if eps is not None else machine ** (1 / 3)
    return base * (1.0 + theta_norm) / max(float(v.norm()), 1e-30)


def fd_hessian_vector_product(grad_at: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                              v: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """H v ≈ (g(θ + hv) - g(θ - hv)) / 2h: Hessian-free with first-order gradients only.

    `grad_at()` returns the flat gradient at the parameters' current values. The parameters
    are restored bit for bit afterwards.
    """
    h = fd_step(params, v, eps)
    theta = flatten([p.detach() for p in params]).clone()
    try:
        set_flat_(params, theta + h * v)
        g_plus = grad_at()
        set_flat_(params, theta - h * v)
        g_minus = grad_at()
    finally:
        set_flat_(params, theta)
    return (g_plus - g_minus) / (2 * h)


class GaussNewton:
    """Gauss–Newton products G v = Jᵀ H_L J v (Schraudolph 2002; Martens 2010).

    J is the Jacobian of the model outputs (logits) w.r.t. the parameters and H_L the Hessian
    of the loss w.r.t. the outputs. For cross-entropy on softmax outputs H_L is positive
    semi-definite, so G is too and CG never meets negative curvature.

    J v comes either from the double-vjp trick (exact; needs double backward through the
    model: `jvp="exact"`) or from a central difference of the outputs (`jvp="fd"`, needs
    `outputs_at()` returning the outputs at the current parameters). H_L w differentiates only
    the loss-of-logits part twice, and Jᵀ w is one ordinary backward pass. Terms of the loss
    that do not flow through the outputs (a weight penalty) are not part of G.
    """

    def __init__(self, loss: torch.Tensor, outputs: torch.Tensor, params: Sequence[torch.Tensor],
                 *, jvp: str = "exact", outputs_at: Callable[[], torch.Tensor] | None = None,
                 eps: float | None = None) -> None:
        if jvp not in ("exact", "fd"):
            raise ValueError(f"jvp must be 'exact' or 'fd', got {jvp!r}")
        if jvp == "fd" and outputs_at is None:
            raise ValueError("jvp='fd' needs outputs_at()")
        self.params, self.outputs, self.jvp = list(params), outputs, jvp
        self.outputs_at, self.eps = outputs_at, eps
        # d loss / d outputs, differentiable, for H_L w
        (self.loss_grad,) = torch.autograd.grad(loss, outputs, create_graph=True, retain_graph=True)
        if jvp == "exact":
            # Jᵀu with u a dummy variable; differentiating Jᵀu·v w.r.t. u gives J v
            self.u = torch.zeros_like(outputs, requires_grad=True)
            jtu = torch.autograd.grad(outputs, self.params, grad_outputs=self.u, create_graph=True,
                                      allow_unused=True)
            self.jtu = [(g, p) for g, p in zip(jtu, self.params) if g is not None]

    def jacobian_vector(self, v: torch.Tensor) -> torch.Tensor:
        """J v, shaped like the outputs."""
        if self.jvp == "exact":
            chunks = dict(zip(map(id, self.params), unflatten(v, self.params)))
            (jv,) = torch.autograd.grad([g for g, _ in self.jtu], self.u,
                                        grad_outputs=[chunks[id(p)] for _, p in self.jtu],
                                        retain_graph=True)
            return jv
        h = fd_step(self.params, v, self.eps)
        theta = flatten([p.detach() for p in self.params]).clone()
        try:
            set_flat_(self.params, theta + h * v)
            out_plus = self.outputs_at()
            set_flat_(self.params, theta - h * v)
            out_minus = self.outputs_at()
        finally:
            set_flat_(self.params, theta)
        return (out_plus - out_minus) / (2 * h)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        jv = self.jacobian_vector(v)  # like outputs, e.g. (B, T, V)
        (hjv,) = torch.autograd.grad(self.loss_grad, self.outputs, grad_outputs=jv.to(
            self.outputs.dtype), retain_graph=True, allow_unused=True)  # H_L J v
        if hjv is None:  # a loss linear in the outputs has H_L = 0
            hjv = torch.zeros_like(self.outputs)
        jt = torch.autograd.grad(self.outputs, self.params, grad_outputs=hjv, retain_graph=True,
                                 allow_unused=True)  # Jᵀ H_L J v
        return flatten([torch.zeros_like(p) if g is None else g for p, g in zip(self.params, jt)])


# --------------------------------------------------------------------------- conjugate gradient


@dataclass
class CGResult:
    """What `conjugate_gradient` found."""

    x: torch.Tensor  # the last iterate
    iterations: int  # matrix-vector products spent on iterations (the warm-start check excluded)
    residual: float  # |b - A x| / |b| at the end
    negative_curvature: bool  # stopped on pᵀAp <= 0 (A not positive definite)
    # (iteration, x_i, φ(x_i)) at iterations ceil(γ^j) and the last: the candidates that
    # Martens' CG backtracking chooses among; φ(x) = ½ xᵀAx - bᵀx
    iterates: list[tuple[int, torch.Tensor, float]] = field(default_factory=list)


def _save_points(gamma: float | None, max_iters: int) -> set[int]:
    """Iterations ceil(γ^j) <= max_iters: γ=1.3 gives 1, 2, 3, 4, 5, 7, 9, 11, 14, 18, ..."""
    if not gamma:
        return set()
    points, j = set(), 0
    while (i := math.ceil(gamma ** j)) <= max_iters:
        points.add(i)
        j += 1
    return points


def conjugate_gradient(matvec: Matvec, b: torch.Tensor, x0: torch.Tensor | None = None, *,
                       max_iters: int = 50, tol: float = 1e-4,
                       precond: torch.Tensor | None = None, progress_tol: float = 5e-4,
                       save_gamma: float | None = None) -> CGResult:
    """Solve A x = b by preconditioned conjugate gradient (A symmetric, ideally positive definite).

    Stops after `max_iters` products, when |r| <= tol |b|, on negative curvature, or when the
    quadratic φ(x) = ½ xᵀAx - bᵀx stops improving (Martens 2010, sec. 4.4): after k = max(10,
    i/10) more iterations it fell by less than a fraction k * progress_tol (0 disables).
    `precond` is the diagonal M of a preconditioner (CG then solves with M⁻¹A). A warm start
    `x0` is dropped when it is worse than zero, φ(x0) > 0.
    """
    b_norm = float(b.norm())
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    if b_norm == 0.0:
        return CGResult(torch.zeros_like(b), 0, 0.0, False, [(0, torch.zeros_like(b), 0.0)])
    r = b - matvec(x) if x0 is not None else b.clone()
    if x0 is not None and -0.5 * float(x @ (b + r)) >= 0.0:
        x, r = torch.zeros_like(b), b.clone()  # the warm start is no better than nothing
    z = r / precond if precond is not None else r
    p = z.clone()
    rz = float(r @ z)
    save = _save_points(save_gamma, max_iters)
    history: list[float] = []  # φ(x_i)
    iterates: list[tuple[int, torch.Tensor, float]] = []
    negative, i = False, 0
    while i < max_iters and float(r.norm()) > tol * b_norm:
        ap = matvec(p)
        curvature = float(p @ ap)
        if curvature <= 0.0:
            negative = True
            if i > 0:
                break
            # first direction already has negative curvature: step as if it were |pᵀAp|
            # (or 1 when exactly 0) and let the caller's line search pick the length
            alpha = rz / abs(curvature) if curvature else 1.0
            x = x + alpha * p
            r = r - alpha * ap
            i += 1
            break
        alpha = rz / curvature
        x = x + alpha * p  # (n,)
        r = r - alpha * ap
        i += 1
        phi = -0.5 * float(x @ (b + r))  # ½xᵀAx - bᵀx with Ax = b - r
        history.append(phi)
        if i in save:
            iterates.append((i, x.clone(), phi))
        k = max(10, i // 10)
        if progress_tol and i > k and phi < 0 and (phi - history[-k - 1]) / phi < k * progress_tol:
            break
        z = r / precond if precond is not None else r
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    phi = -0.5 * float(x @ (b + r))
    if not iterates or iterates[-1][0] != i:
        iterates.append((i, x.clone(), phi))
    return CGResult(x, i, float(r.norm()) / b_norm, negative, iterates)
