"""Bad GGUF input: one clear line each, exit 1, nothing written."""

from __future__ import annotations

import numpy as np

from .gguf_helpers import byte_level_tokenizer, gguf, tiny_model, write_gguf

from lmforge.cli import main  # noqa: E402


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ") and "\n" not in err and "Traceback" not in err
    return err


def _from_gguf(capsys, tmp_path, path) -> str:
    err = _one_line_error(capsys, ["convert", "from-gguf", str(path), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()  # nothing created
    return err


def test_unsupported_architecture_is_named_with_the_supported_ones(tmp_path, capsys):
    w = gguf.GGUFWriter(str(tmp_path / "phi.gguf"), "phi3")
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702
    err = _from_gguf(capsys, tmp_path, tmp_path / "phi.gguf")
    assert "architecture 'phi3' is not supported" in err and "llama, mistral, qwen2, qwen3" in err


def test_unsupported_tensor_type_is_named(tmp_path, capsys):
    path = write_gguf(tmp_path / "m.gguf", tiny_model("llama"), byte_level_tokenizer(),
                      tensor_kinds={"blk.1.ffn_up.weight": "Q5_0"})
    err = _from_gguf(capsys, tmp_path, path)
    assert "tensor blk.1.ffn_up.weight has type Q5_0" in err and "Q4_K" in err


def test_truncated_file(tmp_path, capsys):
    path = write_gguf(tmp_path / "m.gguf", tiny_model("llama"), byte_level_tokenizer())
    data = path.read_bytes()
    for cut in (len(data) - 100, len(data) // 2, 64):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        err = _from_gguf(capsys, tmp_path, tmp_path / "cut.gguf")
        assert "cut.gguf: truncated or corrupted GGUF file" in err


def test_not_a_gguf_and_missing_file(tmp_path, capsys):
    (tmp_path / "x.gguf").write_text("hello, not a model")
    assert "not a GGUF file" in _from_gguf(capsys, tmp_path, tmp_path / "x.gguf")
    assert "no such GGUF file" in _from_gguf(capsys, tmp_path, tmp_path / "nope.gguf")


def test_missing_metadata_is_named(tmp_path, capsys):
    path = write_gguf(tmp_path / "m.gguf", tiny_model("llama"), byte_level_tokenizer(),
                      skip_metadata=("block_count",))
    assert "metadata key llama.block_count is missing" in _from_gguf(capsys, tmp_path, path)


def test_to_gguf_refuses_non_llama_runs(tmp_path, capsys, tiny_corpus):
    run = tmp_path / "gpt"
    assert main(["pretrain", "--data", str(tiny_corpus), "--out", str(run), "model.n_layers=1",
                 "model.d_model=16", "model.n_heads=2", "train.max_steps=1", "train.eval_every=0"]) == 0
    capsys.readouterr()
    err = _one_line_error(capsys, ["convert", "to-gguf", str(run), "--out", str(tmp_path / "g.gguf")])
    assert "only llama-family runs export to GGUF" in err and not (tmp_path / "g.gguf").exists()
