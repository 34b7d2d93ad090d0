"""Cross-entropy over a large vocabulary without holding the full (B, T, V) logits.

A causal LM's loss is `CE(hidden @ weight.T, targets)`. For today's vocabularies the logits
dwarf everything else: batch 4 x 2,048 tokens x 151,936 entries is 5 GB in fp32, and autograd
keeps them (and their softmax) until backward. Here only the rows whose target is not
`ignore_index` are projected, a chunk of rows at a time; forward keeps one log-sum-exp per
row, and backward recomputes each chunk's logits to form its gradient
`(softmax - onehot) * grad` (the trick of Liger-Kernel's fused linear cross-entropy and
torchtune's chunked CE, written here as one autograd Function). Peak extra memory is one
chunk of logits instead of all of them; the price is a second matmul per chunk in backward
(except when all rows fit in one chunk: its logits are kept, at the same peak).

    loss = chunked_cross_entropy(hidden, lm_head.weight, targets)        # == F.cross_entropy
    logp = chunked_token_logprobs(hidden, lm_head.weight, targets)       # (B, T), 0 where ignored

Under autocast the projection runs in the autocast dtype (as `nn.Linear` would) and the
log-softmax in fp32 (as `F.cross_entropy(logits.float())`), so numbers match the plain path.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
MIN_CHUNK_ELEMENTS = 8 * 1024 * 1024  # a chunk's logits may always be this big (32 MB fp32)


def auto_chunk_size(n_rows: int, vocab: int, width: int) -> int:
    """Rows per chunk: a chunk's logits about as large as the hidden rows (Liger's rule), or
    MIN_CHUNK_ELEMENTS when that is larger, so small batches are not cut into slivers.

    >>> auto_chunk_size(8192, 151936, 896)   # 8192 * 896 / 151936 = 48 -> floor of 55 rows
    55
    """
    by_hidden = n_rows * width // max(vocab, 1)
    return max(1, min(n_rows, max(by_hidden, MIN_CHUNK_ELEMENTS // max(vocab, 1))))


def linear_compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype `nn.Linear` would compute in here: autocast's, else the input's."""
    if torch.is_autocast_enabled(device.type) and dtype in (torch.float32, torch.bfloat16,
                                                             torch.float16):
        return torch.get_autocast_dtype(device.type)
    return dtype


class _RowNLL(torch.autograd.Function):
    """rows (N, D), weight (V, D), targets (N,) -> -log softmax(rows @ weight.T)[target] (N,)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_size: int, compute_dtype: torch.dtype) -> torch.Tensor:
        acc = torch.promote_types(compute_dtype, torch.float32)  # log-softmax precision
        nll = torch.empty(rows.shape[0], dtype=acc, device=rows.device)
        lse = torch.empty_like(nll)
        w = weight.to(compute_dtype)
        with torch.autocast(rows.device.type, enabled=False):
            for start in range(0, rows.shape[0], chunk_size):
                stop = start + chunk_size
                logits = (rows[start:stop].to(compute_dtype) @ w.T).to(acc)  # (C, V)
                lse[start:stop] = torch.logsumexp(logits, dim=-1)
                picked = logits.gather(1, targets[start:stop, None])[:, 0]  # (C,)
                nll[start:stop] = lse[start:stop] - picked
        ctx.save_for_backward(rows, weight, targets, lse)
        ctx.chunk_size, ctx.compute_dtype = chunk_size, compute_dtype
        # one chunk in all (SFT's few assistant rows): keep its logits for backward instead of
        # recomputing them; backward would hold a chunk of logits at that point anyway, so the
        # peak is the same and one of the three vocabulary products goes
        ctx.logits = logits if 0 < rows.shape[0] <= chunk_size else None
        return nll

    @staticmethod
    def backward(ctx, grad_nll: torch.Tensor):
        rows, weight, targets, lse = ctx.saved_tensors
        need_rows, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        cdt, size = ctx.compute_dtype, ctx.chunk_size
        w = weight.to(cdt)
        grad_rows = torch.empty_like(rows) if need_rows else None
        # the weight's gradient accumulates over chunks, in fp32 (or fp64 for fp64 inputs)
        grad_w = (torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device)
                  if need_weight else None)
        with torch.autocast(rows.device.type, enabled=False):
            for start in range(0, rows.shape[0], size):
                stop = start + size
                h = rows[start:stop].to(cdt)  # (C, D)
                logits = ctx.logits if ctx.logits is not None else (h @ w.T).to(lse.dtype)  # (C, V)
                # d nll / d logits = softmax - onehot(target), scaled by the incoming gradient
                g = torch.exp(logits - lse[start:stop, None])
                g.scatter_add_(1, targets[start:stop, None],
                               -torch.ones_like(lse[start:stop, None]))
                g = (g * grad_nll[start:stop, None].to(g.dtype)).to(cdt)  # (C, V)
                if need_rows:
                    grad_rows[start:stop] = (g @ w).to(rows.dtype)  # (C, D)
                if need_weight:
                    grad_w += (g.T @ h).to(grad_w.dtype)  # (V, D)
        if need_weight:
            grad_w = grad_w.to(weight.dtype)
        return grad_rows, grad_w, None, None, None


def _row_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
             ignore_index: int, chunk_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative log-likelihood of each kept position (N,), flat indices of those positions)."""
    flat_targets = targets.reshape(-1)  # (B*T,)
    keep = (flat_targets != ignore_index).nonzero()[:, 0]  # (N,) positions that carry loss
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)  # (N, D)
    kept_targets = flat_targets.index_select(0, keep)
    if kept_targets.numel() and (kept_targets.min() < 0 or kept_targets.max() >= weight.shape[0]):
        raise ValueError(f"target ids must be in [0, {weight.shape[0]}) or {ignore_index}")
    size = chunk_size or auto_chunk_size(max(rows.shape[0], 1), weight.shape[0], weight.shape[1])
    cdt = linear_compute_dtype(hidden.device, hidden.dtype)
    return _RowNLL.apply(rows, weight, kept_targets, int(size), cdt), keep


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          ignore_index: int = IGNORE_INDEX,
                          chunk_size: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `targets`, over non-ignored positions.

    hidden (B, T, D) or (N, D), weight (V, D), targets (B, T) or (N,). Equal to
    `F.cross_entropy((hidden @ weight.T).flatten(0, -2).float(), targets.flatten(),
    ignore_index=ignore_index)`, NaN included when every target is ignored.
    `chunk_size` = rows projected at once (None: `auto_chunk_size`).
    """
    nll, _ = _row_nll(hidden, weight, targets, ignore_index, chunk_size)
    return nll.sum() / nll.shape[0]


def chunked_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                           ignore_index: int = IGNORE_INDEX,
                           chunk_size: int | None = None) -> torch.Tensor:
    """log p(target) at every position, shaped like `targets`, 0 where the target is ignored.

    Sum a row of it for a sequence's log-likelihood (DPO's policy and reference terms).
    """
    nll, keep = _row_nll(hidden, weight, targets, ignore_index, chunk_size)
    out = torch.zeros(targets.numel(), dtype=nll.dtype, device=nll.device)
    out = out.index_put((keep,), -nll)  # differentiable scatter into the kept positions
    return out.view(targets.shape)
