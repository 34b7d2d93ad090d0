"""Atomic, pickle-free checkpoints.

Weights go to `model.safetensors`; optimizer, schedule, step, data position and RNG states to
`trainer_state.pt` (loadable with `torch.load(weights_only=True)`). Each file is written to a
temp name and renamed into place. The trainer state records the SHA-256 of the weights it
belongs with, so a run killed between the two renames is detected (and rolled forward from
the temp file that survived) instead of being half-loaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..io import atomic_write_text  # noqa: F401  (re-exported: writers of run files import it here)
from ..files import as_umask_allows
from .weights_file import DiskFull, is_disk_full, verify_weights, write_safetensors

WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"
TRAINER_STATE = "trainer_state.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted or does not fit the model."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    as_umask_allows(tmp)  # safetensors creates 0600 files
    os.replace(tmp, final)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with tied tensors stored once (safetensors refuses shared storage)."""
    state, seen = {}, {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.dtype) if tensor.numel() else None
        if key is not None and key in seen:
            continue  # tied weight: restored by the module itself (e.g. lm_head = embed)
        if key is not None:
            seen[key] = name
        state[name] = tensor.detach().contiguous().cpu()
    return state


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write the model's weights to a safetensors file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write_safetensors(model_state(model), tmp, metadata=metadata)
        _fsync_replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise DiskFull(f"disk full while writing {path}; "
                           + ("the previous file is intact" if path.exists() else "nothing was written")
                           + " (free some space and run the command again)") from None
        raise


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after checking the SHA-256 it recorded (files written
    before lmforge recorded one load unchecked)."""
    verify_weights(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupted or truncated weights file ({err})") from None


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into `model`, naming any missing, unexpected or misshapen tensor."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no weights file")
    state = load_state(path)
    own = model.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(own[name].shape)}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not _is_tied(model, m, state)]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def _is_tied(model: nn.Module, name: str, state: dict[str, torch.Tensor]) -> bool:
    """True when `name` shares storage with a tensor that was loaded (weight tying)."""
    own = model.state_dict()
    target = own[name]
    return any(other in state and own[other].data_ptr() == target.data_ptr()
               for other in own if other != name)


def save_checkpoint(run_dir: str | Path, model: nn.Module, trainer_state: dict[str, Any]) -> None:
    """Write weights and trainer state so that a kill at any instant leaves a loadable pair."""
    run_dir = Path(run_dir)
    weights_tmp = run_dir / (WEIGHTS + ".tmp")
    state_tmp = run_dir / (TRAINER_STATE + ".tmp")
    try:
        write_safetensors(model_state(model), weights_tmp, metadata={"step": str(trainer_state["step"])})
        trainer_state = dict(trainer_state, weights_sha256=_sha256(weights_tmp))
        torch.save(trainer_state, state_tmp)
    except Exception as err:
        # nothing was renamed yet: the previous checkpoint is whole; free the disk again
        weights_tmp.unlink(missing_ok=True)
        state_tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise DiskFull(f"disk full while writing the checkpoint of step {trainer_state['step']} "
                           f"in {run_dir}; {_intact(run_dir)}") from None
        raise
    _fsync_replace(state_tmp, run_dir / TRAINER_STATE)
    _fsync_replace(weights_tmp, run_dir / WEIGHTS)


def _intact(run_dir: Path) -> str:
    """What a failed checkpoint left: the previous one (named by its step), or none."""
    try:
        step = torch.load(run_dir / TRAINER_STATE, map_location="cpu", weights_only=True)["step"]
    except Exception:
        return "there is no earlier checkpoint (free some space and start again)"
    return (f"the checkpoint of step {step} is intact (free some space, then continue with "
            f"--resume {run_dir})")


def load_trainer_state(run_dir: str | Path) -> dict[str, Any]:
    """Read trainer_state.pt (weights_only) and make sure model.safetensors belongs with it."""
    run_dir = Path(run_dir)
    path = run_dir / TRAINER_STATE
    if not path.is_file():
        raise CheckpointError(f"{path}: no trainer state to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, refused pickle, ...
        raise CheckpointError(f"{path}: corrupted or unsafe trainer state ({type(err).__name__})") from None
    weights = run_dir / WEIGHTS
    expected = state.get("weights_sha256")
    if expected and (not weights.is_file() or _sha256(weights) != expected):
        leftover = run_dir / (WEIGHTS + ".tmp")
        if leftover.is_file() and _sha256(leftover) == expected:
            os.replace(leftover, weights)  # killed between the two renames: roll forward
        else:
            raise CheckpointError(
                f"{weights}: does not match {TRAINER_STATE} (step {state.get('step')}); "
                "the checkpoint is incomplete or was modified")
    return state
