"""Where and how a model runs: device choice, mixed precision, RNG state, metrics.csv.

Kept apart from the training loop so that loading a run for inference (`run.load_run`,
serving, conversion) does not import the Trainer.
"""

from __future__ import annotations

import contextlib
import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import mfu as mfu_lib


def pick_device(name: str = "auto") -> torch.device:
    """`auto` -> CUDA, then Apple MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:  # "tpu", "cuda:x": torch names the valid types
        from ..errors import ConfigError

        raise ConfigError(f"device {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps "
                          f"({str(err).split(' at start')[0]})") from None


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast where the device supports it; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA device; use bf16 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where this device runs bf16 matmuls clearly faster than fp32, else fp32.

    CUDA: any GPU with bf16 support (Ampere on). CPU: decided by the matmul peaks that the mfu
    column measures and caches anyway (train/mfu.py): bf16 when its peak is at least 1.5x the
    fp32 one (AVX-512 BF16 / AMX CPUs), since elsewhere bf16 is emulated and slower.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        fp32, bf16 = _device_peak(device, "fp32"), _device_peak(device, "bf16")
        return "bf16" if fp32 > 0 and bf16 >= 1.5 * fp32 else "fp32"
    return "fp32"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
             "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), 624, 0, 0.0))
    py = random.getstate()
    random.setstate((py[0], tuple(state["python"]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MetricsLog:
    """metrics.csv: one row per logged point, header fixed at the first write."""

    BASE = ["step", "split", "loss"]
    TAIL = ["lr", "tokens_per_s", "mfu", "elapsed_s"]

    def __init__(self, path: Path, metric_names: list[str], resume_step: int | None) -> None:
        self.path = path
        self.columns = self.BASE + list(metric_names) + self.TAIL
        if resume_step is not None and path.is_file():
            # keep rows up to the checkpoint: steps logged after it will be logged again
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            self._write_all(rows)
        else:
            self._write_all([])

    def _write_all(self, rows: list[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _device_peak(device: torch.device, precision: str) -> float:
    """The matmul peak for the mfu column; 0 (mfu left empty) where it cannot be measured."""
    try:
        return mfu_lib.matmul_peak(device, precision)
    except Exception as err:  # e.g. a dtype this device has no matmul for: train anyway
        print(f"warning: no matmul peak for {device} {precision} ({err}); mfu left empty")
        return 0.0


def plot_metrics(run_dir: Path) -> None:
    """Redraw RUN/plots/*.png from metrics.csv; a failed plot never stops training."""
    try:
        from ..eval.plots import plot_metrics_csv
    except ImportError:
        return
    try:
        plot_metrics_csv(run_dir / "metrics.csv", run_dir / "plots")
    except Exception as err:  # a plot must never kill a training run
        print(f"warning: could not plot metrics ({err})")
