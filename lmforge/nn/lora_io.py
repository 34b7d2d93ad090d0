"""LoRA adapters on disk: `adapter.safetensors`, tied to the base they were trained on.

    save_adapter(model, run / "adapter.safetensors", base_dir)   # A, B (+ trained head) only
    load_adapter(model, run / "adapter.safetensors", base_dir)   # refused on another base
    load_base_weights(model, base_dir)   # a plain run's weights into a LoRA-wrapped model

The file holds the adapter matrices (and any other trainable tensor, e.g. a classifier
head) and, in its safetensors metadata, the LoRA options, the base run's path and the
base's fingerprint: the SHA-256 of its weights file. An adapter applied to a base whose
weights differ would silently compute something else, so `load_adapter` refuses it and
names both bases.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn

from ..config import ConfigError
from ..train.checkpoint import BEST_WEIGHTS, WEIGHTS
from ..train.weights_file import verify_weights, write_safetensors
from .lora import LoRALinear

ADAPTER = "adapter.safetensors"
_FINGERPRINTS: dict[tuple[str, float, int], str] = {}  # (path, mtime, size) -> sha256


def base_weights_file(base_dir: str | Path) -> Path:
    """The weights a base run hands on: best.safetensors when present, else model.safetensors."""
    base_dir = Path(base_dir)
    for name in (BEST_WEIGHTS, WEIGHTS):
        if (base_dir / name).is_file():
            return base_dir / name
    raise ConfigError(f"base {base_dir}: no weights ({WEIGHTS})")


def base_fingerprint(base_dir: str | Path) -> str:
    """SHA-256 of the base run's weights file (cached per path, mtime and size)."""
    path = base_weights_file(base_dir)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime, stat.st_size)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor of a LoRA model: the adapters, plus e.g. a classifier head."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters()
            if p.requires_grad or "lora_A" in name or "lora_B" in name}


def save_adapter(model: nn.Module, path: str | Path, base_dir: str | Path,
                 options: dict | None = None) -> Path:
    """Write the adapters alone, with the base's path and fingerprint, atomically."""
    path = Path(path)
    state = adapter_state(model)
    if not any("lora_A" in k for k in state):
        raise ConfigError("the model has no LoRA adapters to save")
    options = options if options is not None else model.config.extra.get("lora", {})
    meta = {"format": "lmforge-lora", "base": str(Path(base_dir).resolve()),
            "base_sha256": base_fingerprint(base_dir), "lora": json.dumps(options)}
    tmp = path.with_name(path.name + ".tmp")
    write_safetensors(state, tmp, metadata=meta)  # records its SHA-256, checked on every load
    tmp.replace(path)
    return path


def read_adapter_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an adapter file (base, base_sha256, lora options as JSON)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no adapter file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != "lmforge-lora":
        raise ConfigError(f"{path}: not an lmforge LoRA adapter (no lmforge-lora metadata)")
    return meta


def check_base(path: str | Path, base_dir: str | Path) -> dict[str, str]:
    """Refuse an adapter whose recorded base fingerprint differs from `base_dir`'s."""
    meta = read_adapter_metadata(path)
    actual = base_fingerprint(base_dir)
    if meta["base_sha256"] != actual:
        raise ConfigError(
            f"{path} was trained on base {meta['base']} (weights sha256 {meta['base_sha256'][:12]}) "
            f"and cannot be applied to base {Path(base_dir).resolve()} (sha256 {actual[:12]}): "
            "different weights")
    return meta


def load_adapter(model: nn.Module, path: str | Path, base_dir: str | Path) -> None:
    """Load adapter tensors into a LoRA-wrapped `model` built on `base_dir`'s weights."""
    check_base(path, base_dir)
    verify_weights(path)  # corrupted adapter bytes: one line naming the file
    state = load_file(str(path))
    own = dict(model.named_parameters())
    missing = [k for k in own if ("lora_A" in k or "lora_B" in k) and k not in state]
    unknown = [k for k in state if k not in own]
    if missing or unknown:
        raise ConfigError(f"{path}: adapters do not fit the model (missing {missing[:3]}, "
                          f"unexpected {unknown[:3]}); were the LoRA targets or rank changed?")
    with torch.no_grad():
        for name, tensor in state.items():
            if own[name].shape != tensor.shape:
                raise ConfigError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model "
                                  f"expects {tuple(own[name].shape)}")
            own[name].copy_(tensor)


def base_key_map(model: nn.Module) -> dict[str, str]:
    """Plain-model weight name -> name inside a LoRA-wrapped model (`x.weight` -> `x.base.weight`)."""
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    mapping = {}
    for name in wrapped:
        for leaf in ("weight", "bias"):
            mapping[f"{name}.{leaf}"] = f"{name}.base.{leaf}"
    return mapping


def load_base_weights(model: nn.Module, base_dir_or_file: str | Path) -> int:
    """Load a plain (unwrapped) run's weights into `model`, which may carry fresh adapters.

    Every tensor of the model but the adapters must be in the file, and nothing else;
    returns the number of tensors loaded.
    """
    src = Path(base_dir_or_file)
    path = src if src.is_file() else base_weights_file(src)
    try:
        verify_weights(path)
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from None
    mapping = base_key_map(model)
    state = {mapping.get(k, k): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if "lora_A" not in k and "lora_B" not in k]
    tied = _tied_names(model)
    missing = [k for k in missing if k not in tied]
    if missing or result.unexpected_keys:
        raise ConfigError(f"{path}: base weights do not fit the model (missing {missing[:4]}, "
                          f"unexpected {result.unexpected_keys[:4]})")
    return len(state)


def _tied_names(model: nn.Module) -> set[str]:
    """Parameter names that share storage with an earlier one (stored once on disk)."""
    seen, tied = set(), set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        seen.add(id(p))
    return tied
