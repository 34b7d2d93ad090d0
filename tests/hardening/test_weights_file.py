"""The SHA-256 a weights file records in its own header: written, read, checked."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmforge.train.weights_file import (HASH_KEY, WeightsCorrupted, recorded_sha256, verify_weights,
                                        write_safetensors)


def test_the_recorded_hash_is_the_hash_of_the_tensor_bytes(tmp_path):
    import hashlib
    import struct

    state = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    path = tmp_path / "w.safetensors"
    write_safetensors(state, path, metadata={"step": "7"})
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert recorded_sha256(path) == hashlib.sha256(raw[8 + n:]).hexdigest()
    loaded = load_file(str(path))  # still an ordinary safetensors file
    assert torch.equal(loaded["a"], state["a"]) and torch.equal(loaded["b"], state["b"])
    verify_weights(path)


def test_one_flipped_bit_is_refused_by_name(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors({"a": torch.zeros(100)}, path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsCorrupted, match="w.safetensors: the tensor bytes do not match"):
        verify_weights(path)


def test_files_without_a_hash_load_unchecked(tmp_path):
    path = tmp_path / "legacy.safetensors"
    save_file({"a": torch.ones(2)}, str(path))
    assert recorded_sha256(path) is None
    verify_weights(path)  # no error
    assert HASH_KEY == "lmforge.sha256"
