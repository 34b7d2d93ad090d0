"""GGUF export: lmforge run -> GGUF -> lmforge gives identical logits (f32) or close ones
(f16, bf16, q8_0); transformers' GGUF loader reads the export with equal logits; the
tokenizer and chat template travel in the file; refusals leave files untouched."""

from __future__ import annotations

import json

import pytest
import torch

from .gguf_helpers import byte_level_tokenizer, text_lines, tiny_model, transformers_gguf_model, write_gguf

from lmforge.cli import main  # noqa: E402
from lmforge.convert.gguf_convert import from_gguf, import_gguf, to_gguf  # noqa: E402
from lmforge.convert.gguf_read import open_gguf  # noqa: E402
from lmforge.run import load_run  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer("smollm")


def make_run(tmp_path, tokenizer, arch="llama", **overrides):
    path = write_gguf(tmp_path / "src.gguf", tiny_model(arch, **overrides), tokenizer, arch=arch)
    return from_gguf(path, tmp_path / "run")


IDS = torch.randint(3, 320, (2, 20), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_f32_round_trip_is_exact(tmp_path, tokenizer, arch):
    run_dir = make_run(tmp_path, tokenizer, arch)
    out = to_gguf(run_dir, tmp_path / "out.gguf", "f32")
    assert open_gguf(out).fields["general.architecture"].contents() == arch
    original = load_run(run_dir, device="cpu")
    again = load_run(from_gguf(out, tmp_path / "again"), device="cpu")
    with torch.no_grad():
        assert torch.equal(original.model(IDS)[0], again.model(IDS)[0])
    assert again.model_config == original.model_config
    lines = text_lines(300)
    assert again.tokenizer.encode_batch(lines) == original.tokenizer.encode_batch(lines)
    assert json.loads((tmp_path / "again" / "tokenizer_config.json").read_text()) == \
        json.loads((run_dir / "tokenizer_config.json").read_text())


@pytest.mark.parametrize("dtype,tol", [("f16", 0.005), ("bf16", 0.05), ("q8_0", 0.1)])
def test_smaller_types_stay_close(tmp_path, tokenizer, dtype, tol):
    run_dir = make_run(tmp_path, tokenizer, hidden_size=128, intermediate_size=192)
    out = to_gguf(run_dir, tmp_path / f"out-{dtype}.gguf", dtype)
    original = load_run(run_dir, device="cpu").model
    model, _, _, _ = import_gguf(out)
    with torch.no_grad():
        ref, got = original(IDS)[0], model(IDS)[0]
    assert 0 < (got - ref).abs().max().item() <= tol * ref.abs().max().item()
    kinds = {t.tensor_type.name for t in open_gguf(out).tensors}
    assert kinds == {"F32", {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[dtype]}  # norms stay F32


@pytest.mark.parametrize("dtype,tol", [("f32", 1e-4), ("q8_0", 0.1)])
def test_transformers_gguf_loader_reads_the_export(tmp_path, tokenizer, dtype, tol):
    run_dir = make_run(tmp_path, tokenizer, hidden_size=128, intermediate_size=192)
    out = to_gguf(run_dir, tmp_path / "export" / "m.gguf", dtype)
    run = load_run(run_dir, device="cpu")
    with torch.no_grad():
        ref, got = run.model(IDS)[0], transformers_gguf_model(out)(IDS).logits
    assert (got - ref).abs().max().item() <= tol * max(1.0, ref.abs().max().item())
    hf_tok = __import__("transformers").AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    assert hf_tok.eos_token == "<|im_end|>"
    msgs = [{"role": "user", "content": "hi"}]
    from lmforge.chat import ChatTemplate

    assert hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
        ChatTemplate.from_run(run_dir).render(msgs, add_generation_prompt=True)


def test_llama3_rope_scaling_survives_the_round_trip(tmp_path, tokenizer):
    run_dir = make_run(tmp_path, tokenizer, head_dim=16, num_attention_heads=4)
    config = json.loads((run_dir / "model_config.json").read_text())
    config["rope_scaling"] = {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_len": 8192}
    (run_dir / "model_config.json").write_text(json.dumps(config))
    out = to_gguf(run_dir, tmp_path / "out.gguf", "f32")
    assert "rope_freqs.weight" in {t.name for t in open_gguf(out).tensors}
    model, _, cfg, _ = import_gguf(out)
    assert cfg.rope_scaling == config["rope_scaling"]
    with torch.no_grad():
        assert torch.equal(model(IDS)[0], load_run(run_dir, device="cpu").model(IDS)[0])


def test_cli_round_trip_and_refusals(tmp_path, tokenizer, capsys):
    run_dir = make_run(tmp_path, tokenizer)
    out = tmp_path / "m.gguf"
    assert main(["convert", "to-gguf", str(run_dir), "--out", str(out), "--type", "q8_0"]) == 0
    before = out.read_bytes()
    assert main(["convert", "to-gguf", str(run_dir), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["convert", "from-gguf", str(out), "--out", str(tmp_path / "r2")]) == 0
    assert "lmforge chat" in capsys.readouterr().out
    assert main(["convert", "from-gguf", str(out), "--out", str(tmp_path / "r2")]) == 1
    assert "already holds a run" in capsys.readouterr().err


def test_embedding_rows_beyond_the_tokenizer_get_unused_tokens(tmp_path, tokenizer):
    # models often pad the embedding table (e.g. to a multiple of 64): llama.cpp wants one
    # token per row, so the export lists unused [PADn] tokens for the extra rows
    run_dir = make_run(tmp_path, tokenizer, vocab_size=336)
    out = to_gguf(run_dir, tmp_path / "out.gguf", "f32")
    fields = open_gguf(out).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == 336 and tokens[-1] == "[PAD335]"
    assert fields["tokenizer.ggml.token_type"].contents()[-1] == 5  # UNUSED
    again = load_run(from_gguf(out, tmp_path / "again"), device="cpu")
    with torch.no_grad():
        assert torch.equal(again.model(IDS)[0], load_run(run_dir, device="cpu").model(IDS)[0])
    lines = text_lines(100)
    assert again.tokenizer.encode_batch(lines) == [e.ids for e in tokenizer.encode_batch(lines)]
