"""One safetensors writer and checker: every weights file records the SHA-256 of its tensor bytes.

The digest lives in the file's own header (metadata key `lmforge.sha256`), so it travels with
the file and is written in the same atomic rename as the weights: no sidecar can go stale.
It is recorded in two passes without rewriting the tensors: the file is written with a
placeholder of 64 zeros, the tensor bytes (everything after the header) are hashed, and
the placeholder is overwritten in place by the digest (same length, so no offset moves).

Every load checks it (`verify_weights`): a flipped byte in a tensor is one clear error naming
the file instead of garbage text or a NaN loss. Files without the key (runs written before
this, Hugging Face files) load unchecked.

A full disk while writing raises `DiskFull` after the temp file is removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import ConfigError

HASH_KEY = "lmforge.sha256"
_PLACEHOLDER = "0" * 64


class WeightsCorrupted(ConfigError):
    """The tensor bytes of a weights file differ from the SHA-256 recorded when it was written."""


class DiskFull(ConfigError):
    """The disk filled up while a file was being written; the temp file is gone."""


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC, whether raised by Python (OSError 28), torch (RuntimeError text) or the Rust
    safetensors writer (SafetensorError "IoError(Os { code: 28 ... StorageFull })")."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return any(s in text for s in ("No space left on device", "StorageFull", "code: 28",
                                   "Disk quota exceeded"))


def write_safetensors(state: dict[str, torch.Tensor], path: str | Path,
                      metadata: dict[str, str] | None = None) -> None:
    """Write `state` to `path` (no rename here: callers write to a temp name) with the SHA-256
    of its tensor bytes recorded in the header."""
    path = Path(path)
    save_file(state, str(path), metadata={**(metadata or {}), HASH_KEY: _PLACEHOLDER})
    with open(path, "r+b") as fh:
        header_len, header = _read_header(fh)
        digest = _hash_from(fh, 8 + header_len)
        needle = f'"{HASH_KEY}":"{_PLACEHOLDER}"'.encode()
        at = header.find(needle)
        if at < 0:  # a writer that formats headers differently: the placeholder stays,
            return  # which reads as "no hash recorded" (loads unchecked, never refused)
        fh.seek(8 + at + len(needle) - 65)
        fh.write(digest.encode())
        fh.flush()
        os.fsync(fh.fileno())


def recorded_sha256(path: str | Path) -> str | None:
    """The digest a weights file recorded, or None (a legacy or foreign file)."""
    with open(path, "rb") as fh:
        _, header = _read_header(fh)
    meta = json.loads(header).get("__metadata__") or {}
    value = meta.get(HASH_KEY)
    return value if value and value != _PLACEHOLDER else None


def verify_weights(path: str | Path) -> None:
    """Raise WeightsCorrupted when the tensor bytes do not hash to the recorded SHA-256; a file
    that recorded none passes (legacy runs)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header_len, header = _read_header(fh)
            meta = json.loads(header).get("__metadata__") or {}
            expected = meta.get(HASH_KEY)
            if not expected or expected == _PLACEHOLDER:
                return
            actual = _hash_from(fh, 8 + header_len)
    except (ValueError, struct.error, UnicodeDecodeError):
        return  # not a readable header: the safetensors loader names the problem
    if actual != expected:
        raise WeightsCorrupted(
            f"{path}: the tensor bytes do not match the SHA-256 recorded when the file was "
            f"written (expected {expected[:12]}..., found {actual[:12]}...); the file is "
            "corrupted: restore it from a copy or re-create the run")


def _read_header(fh) -> tuple[int, bytes]:
    raw = fh.read(8)
    if len(raw) < 8:
        raise ValueError("file shorter than a safetensors header")
    (n,) = struct.unpack("<Q", raw)
    if n > 100_000_000:
        raise ValueError("implausible safetensors header length")
    header = fh.read(n)
    if len(header) < n:
        raise ValueError("truncated safetensors header")
    return n, header


def _hash_from(fh, offset: int) -> str:
    fh.seek(offset)
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 22), b""):
        digest.update(block)
    return digest.hexdigest()
