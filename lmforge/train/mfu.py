"""Model-FLOPs utilisation: the FLOPs a model needs per token against the device's matmul peak.

    peak = matmul_peak(torch.device("cpu"), "bf16")     # FLOP/s, measured once, cached on disk
    fpt = flops_per_token(model, seq_len=256)          # training FLOPs (forward + backward)
    mfu(tokens_per_s=17_000, flops_per_token=fpt, peak=peak)   # e.g. 0.52

The count follows Kaplan et al. 2020 / PaLM (Chowdhery et al. 2022, appendix B) as nanoGPT's
`estimate_mfu` does: every weight that multiplies an activation costs 2 FLOPs per token forward
and 4 backward (6N), and each attention layer of width d adds 12 * d * T (QK^T and the weighted
sum of V, 2 * 2 * d * T forward, times 3 with the backward; the causal half is counted too, as
PaLM does). Embedding tables that are only looked up cost nothing and are left out of N; a tied
output projection is counted once, as the matmul it is. Biases and norms are counted in N as if
they were matmul weights (a slight over-count, under 1 % for real models). For non-Transformer
backbones (RNN, LSTM, GRU, CNN, MLP, bigram) 6N is the whole count: a recurrent cell multiplies
its W_ih and W_hh once per token, a convolution its kernel once per output position; their
element-wise gate arithmetic is not counted.

The peak is what a large square matmul reaches on this device in this precision with this many
threads: a short benchmark (a fraction of a second) whose result is cached in
`$LMFORGE_CACHE/peak.json` (default ~/.cache/lmforge/peak.json), keyed by device name, dtype and
threads. Delete the file to measure again.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from ..cache import cache_root

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------- model FLOPs


def lookup_only_embeddings(model: nn.Module) -> list[nn.Parameter]:
    """Embedding tables used only as lookups (not tied to a matmul): they cost no FLOPs."""
    matmul_weights = {id(m.weight) for m in model.modules()
                      if isinstance(m, nn.Linear)}
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Embedding) and id(m.weight) not in matmul_weights]


def matmul_params(model: nn.Module) -> int:
    """N of 6N: parameters counted once (tied ones too), minus lookup-only embedding tables."""
    skip = {id(p) for p in lookup_only_embeddings(model)}
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def attention_widths(model: nn.Module) -> list[tuple[int, bool]]:
    """(width d = heads x head_dim, is_cross) of each attention layer in the model."""
    from ..nn.attention import CrossAttention, GroupedQueryAttention, SelfAttention

    out = []
    for m in model.modules():
        if isinstance(m, (SelfAttention, CrossAttention, GroupedQueryAttention)):
            out.append((m.n_heads * m.head_dim, isinstance(m, CrossAttention)))
        elif isinstance(m, nn.MultiheadAttention):
            out.append((m.embed_dim, False))
    return out


def _default_seq_len(model: nn.Module) -> int:
    config = getattr(model, "config", None) or getattr(getattr(model, "backbone", None), "config", None)
    return int(getattr(config, "max_len", 0) or 0)


def flops_per_token(model: nn.Module, seq_len: int | None = None,
                    source_len: int | None = None) -> int:
    """Training FLOPs (forward + backward) per token: 6N + 12 * d * T per attention layer.

    `seq_len` (T) defaults to the model's `config.max_len`; `source_len` (S, the length that
    cross-attention attends over) defaults to T.

    Example: a GPT with 2 layers, d_model 32, vocab 50 (tied head), max_len 16 has N = 27,072
    parameters once the 16 x 32 position table is left out, so
    6 * 27,072 + 2 * 12 * 32 * 16 = 174,720 FLOPs per token.
    """
    T = seq_len if seq_len is not None else _default_seq_len(model)
    S = source_len if source_len is not None else T
    attention = sum(12 * d * (S if cross else T) for d, cross in attention_widths(model))
    return 6 * matmul_params(model) + attention


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model-FLOPs utilisation: achieved model FLOP/s over the peak FLOP/s (0..1)."""
    if peak <= 0:
        raise ValueError(f"the peak must be positive, got {peak}")
    return tokens_per_s * flops_per_token / peak


# --------------------------------------------------------------------------- device peak


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (CPU model or GPU name)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine() or "cpu"
    return device.type


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                 seconds: float = 0.3) -> float:
    """FLOP/s of the fastest of repeated n x n matmuls (2 n^3 FLOPs each) within ~`seconds`."""
    n = n or (4096 if device.type in ("cuda", "mps") else 1024)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    for _ in range(2):  # warm-up: kernel selection, caches, thread pool
        a @ b
    _sync(device)
    best, start = float("inf"), time.perf_counter()
    for _ in range(50):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > seconds:
            break
    return 2 * n**3 / best


def peak_cache_path() -> Path:
    """$LMFORGE_CACHE/peak.json, or ~/.cache/lmforge/peak.json."""
    return cache_root() / "peak.json"


def peak_key(device: torch.device, precision: str) -> str:
    """Cache key: device name, dtype and (on CPU) the thread count."""
    threads = f"|threads={torch.get_num_threads()}" if device.type == "cpu" else ""
    return f"{device_name(device)}|{precision}{threads}"


def matmul_peak(device: torch.device | str, precision: str = "fp32",
                path: str | Path | None = None) -> float:
    """The device's matmul FLOP/s in `precision` (fp32 | bf16 | fp16): cached, else measured."""
    device = torch.device(device)
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    path = Path(path) if path else peak_cache_path()
    key = peak_key(device, precision)
    cache: dict[str, float] = {}
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cache.get(key), (int, float)) and cache[key] > 0:
            return float(cache[key])
    except (OSError, ValueError, AttributeError):
        cache = {}  # absent or damaged: measure and rewrite
    peak = measure_peak(device, DTYPES[precision])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**cache, key: peak}, indent=1), encoding="utf-8")
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
    except OSError:
        pass  # a read-only home still trains; the peak is just measured again next time
    return peak
