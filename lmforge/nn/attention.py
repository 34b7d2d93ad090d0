"""Multi-head attention: self-attention (causal or not, with a KV cache) and cross-attention.

Both run on `F.scaled_dot_product_attention`, which picks a fused kernel (flash / memory-
efficient on CUDA, a vectorised C++ path on CPU), through `sdpa` below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .projections import project
from .norm import RMSNorm
from .positional import Rotary

MATH_MAX_KEYS = 256  # the explicit path holds a (B, H, Tq, Tk) score matrix: short contexts only


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                    is_causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with bf16 matmuls and an fp32 softmax.

    For short contexts on CPU this beats both fused kernels in bf16 (0.84 ms fwd+bwd against
    1.18 ms for fp32 flash and 3.1 ms for bf16 flash at 12x4x64x32, torch 2.13).
    """
    scores = (q @ k.transpose(-2, -1)).float() * q.size(-1) ** -0.5  # (B, H, Tq, Tk)
    if is_causal:
        causal = build_attn_mask(q.size(-2), k.size(-2), True, None, q.device)  # (1, 1, Tq, Tk)
        attn_mask = causal if attn_mask is None else attn_mask & causal
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights.to(v.dtype) @ v


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """`F.scaled_dot_product_attention`, except for bf16 on CPU.

    PyTorch's CPU flash-attention backward is about 3x slower in bf16 than in fp32 (measured
    with torch 2.13, 12x4x64x32: 3.1 ms vs 1.1 ms), which cancelled bf16's matmul gain for a
    whole training step. So bf16 on CPU takes the explicit path above for short contexts and
    the fp32 kernel beyond (autocast would cast its inputs straight back to bf16, hence it is
    switched off there).
    """
    if q.dtype != torch.bfloat16 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    if kwargs.pop("enable_gqa", False):  # grouped-query keys: the explicit path wants all heads
        k, v = repeat_kv(k, q.size(1) // k.size(1)), repeat_kv(v, q.size(1) // v.size(1))
    if k.size(-2) <= MATH_MAX_KEYS:
        return _math_attention(q, k, v, **kwargs)
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)


def repeat_kv(t: torch.Tensor, group: int) -> torch.Tensor:
    """(B, Hkv, S, hd) -> (B, Hkv * group, S, hd): query head h reads key-value head h // group."""
    if group == 1:
        return t
    B, Hkv, S, hd = t.shape
    return t[:, :, None].expand(B, Hkv, group, S, hd).reshape(B, Hkv * group, S, hd)


class KVCache:
    """Preallocated keys and values of one attention layer, filled left to right.

    Decoding appends one step at a time into the buffer, so the prefix is never recomputed
    and no tensor is re-allocated per token.
    """

    def __init__(self, batch: int, n_heads: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        self.k = torch.zeros(batch, n_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0  # tokens stored so far

    @property
    def capacity(self) -> int:
        return self.k.size(2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, hd); return all keys and values so far (B, H, L, hd)."""
        T = k.size(2)
        if self.length + T > self.capacity:
            raise ValueError(f"KV cache full: {self.length} + {T} > {self.capacity} positions")
        self.k[:, :, self.length:self.length + T] = k
        self.v[:, :, self.length:self.length + T] = v
        self.length += T
        return self.k[:, :, :self.length], self.v[:, :, :self.length]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the given batch rows, in that order (beam search reorders beams)."""
        self.k = self.k.index_select(0, rows)
        self.v = self.v.index_select(0, rows)


def build_attn_mask(q_len: int, k_len: int, causal: bool, key_mask: torch.Tensor | None,
                    device: torch.device, window: int = 0) -> torch.Tensor | None:
    """Boolean (B|1, 1, q_len, k_len) mask, True where attention is allowed.

    Queries are the last `q_len` of `k_len` positions (a cache holds the earlier ones).
    `window` > 0 (causal only) lets a query see only the `window` most recent positions,
    itself included (Mistral's sliding window: key j is seen from query i when i - j < window).
    A query that would see no key at all (a padding position) may see itself, so that
    softmax never divides by zero; its output is ignored downstream anyway.
    """
    if not causal and key_mask is None:
        return None
    allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    offset = k_len - q_len
    if causal:
        allowed = allowed.tril(diagonal=offset)
        if window > 0:
            allowed = allowed.triu(diagonal=offset - window + 1)
    allowed = allowed[None, None]  # (1, 1, Tq, Tk)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()  # (B, 1, Tq, Tk)
        diag = torch.zeros(q_len, k_len, dtype=torch.bool, device=device)
        diag[torch.arange(q_len), torch.arange(q_len) + offset] = True
        allowed = allowed | diag[None, None]
    return allowed


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = True, rotary: Rotary | None = None) -> None:
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads, self.head_dim, self.causal = n_heads, d_model // n_heads, causal
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.proj.is_residual_proj = True  # scaled init (GPT-2)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.rotary = rotary

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        start = cache.length if cache is not None else 0
        if self.rotary is not None:
            q, k = self.rotary(q, start), self.rotary(k, start)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, start+T, hd)
        S = k.size(2)
        dropout_p = self.dropout if self.training else 0.0
        if key_mask is None and (not self.causal or T == 1):
            y = sdpa(q, k, v, dropout_p=dropout_p)
        elif key_mask is None and S == T:
            y = sdpa(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            mask = build_attn_mask(T, S, self.causal, key_mask, x.device)
            y = sdpa(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, D)  # (B, T, D)
        return self.resid_dropout(self.proj(y))


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with fewer key-value heads than query heads (Ainslie et al. 2023).

    `n_heads` query heads share `n_kv_heads` key-value heads in groups of n_heads / n_kv_heads
    (n_kv_heads = n_heads is ordinary multi-head attention, 1 is multi-query). The KV cache
    holds only the key-value heads, so it is n_heads / n_kv_heads times smaller. Separate
    projections `q`, `k`, `v`, `o` (Llama's layout; LoRA targets use these names). Options:
    q/k/v biases (Qwen2), an RMSNorm over each query and key head before the rotation
    (Qwen3), and a sliding window over the most recent `window` positions (Mistral).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int,
                 rotary: Rotary, dropout: float = 0.0, qkv_bias: bool = False,
                 qk_norm: bool = False, norm_eps: float = 1e-6, window: int = 0) -> None:
        super().__init__()
        assert n_heads % n_kv_heads == 0, "n_heads must be a multiple of n_kv_heads"
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.window = window
        self.q = nn.Linear(d_model, n_heads * head_dim, bias=qkv_bias)
        self.k = nn.Linear(d_model, n_kv_heads * head_dim, bias=qkv_bias)
        self.v = nn.Linear(d_model, n_kv_heads * head_dim, bias=qkv_bias)
        self.o = nn.Linear(n_heads * head_dim, d_model, bias=False)
        self.o.is_residual_proj = True  # scaled init (GPT-2)
        self.q_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.rotary = rotary
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = project(x, self.q, self.k, self.v)  # shared where possible (projections.py)
        q = q.view(B, T, self.n_heads, self.head_dim)  # (B, T, H, hd)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, hd)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        start = cache.length if cache is not None else 0
        q = self.rotary(q.transpose(1, 2), start)  # (B, H, T, hd)
        k = self.rotary(k.transpose(1, 2), start)  # (B, Hkv, T, hd)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hkv, start+T, hd)
        S = k.size(2)
        # the kernels read each key-value head for its whole group of query heads (no copy;
        # 0.67 -> 0.26 ms per decode step at 9/3 heads x 200 keys, batch 1, one CPU thread)
        kwargs = {"dropout_p": self.dropout if self.training else 0.0,
                  "enable_gqa": self.n_heads != self.n_kv_heads}
        windowed = 0 < self.window < S  # some key lies outside some query's window
        if key_mask is None and not windowed and T == 1:
            y = sdpa(q, k, v, **kwargs)
        elif key_mask is None and not windowed and S == T:
            y = sdpa(q, k, v, is_causal=True, **kwargs)
        else:
            mask = build_attn_mask(T, S, True, key_mask, x.device, self.window)
            y = sdpa(q, k, v, attn_mask=mask, **kwargs)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*hd)
        return self.resid_dropout(self.o(y))


class CrossAttention(nn.Module):
    """Multi-head attention of decoder queries over encoder outputs (memory)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 d_memory: int | None = None) -> None:
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.kv = nn.Linear(d_memory or d_model, 2 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.proj.is_residual_proj = True
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project encoder outputs (B, S, Dm) to keys and values (B, H, S, hd) once per input."""
        B, S, _ = memory.shape
        k, v = self.kv(memory).split(self.n_heads * self.head_dim, dim=2)
        k = k.view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None,
                memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, T, D = x.shape
        k, v = memory_kv if memory_kv is not None else self.memory_kv(memory)
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        mask = None if memory_mask is None else memory_mask[:, None, None, :].bool()  # (B,1,1,S)
        dropout_p = self.dropout if self.training else 0.0
        y = sdpa(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, D)
        return self.resid_dropout(self.proj(y))
