"""GPT-2 in and out: parity with `transformers` on a tiny random model, tokenizer ids, export,
generation from an imported run, and refusal of bad input (no network anywhere)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from .hf_helpers import MIXED_TEXT, save_gpt2, transformers, write_malicious_bin

from lmforge.cli import main  # noqa: E402
from lmforge.config import ConfigError, ModelConfig  # noqa: E402
from lmforge.convert import hf_gpt2  # noqa: E402
from lmforge.convert.cli import from_hf, import_hf, to_hf  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402
from lmforge.run import load_run  # noqa: E402
from lmforge.train.checkpoint import CheckpointError, save_weights  # noqa: E402

ATOL = 1e-4


def _ids(vocab: int, B: int = 2, T: int = 24) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_logits_match_transformers(tmp_path, fmt):
    hf, tok = save_gpt2(tmp_path / "hf", fmt=fmt)
    model, _, cfg = import_hf(tmp_path / "hf")
    assert cfg.activation == "gelu_tanh" and cfg.norm_eps == 1e-5 and cfg.arch == "gpt"
    ids = _ids(len(tok))
    with torch.no_grad():
        expected = hf(ids).logits
        got, _ = model(ids)
    assert (got - expected).abs().max().item() <= ATOL


def test_untied_head_and_exact_gelu_match(tmp_path):
    hf, tok = save_gpt2(tmp_path / "hf", tie_word_embeddings=False, activation_function="gelu",
                        n_inner=48)
    model, _, cfg = import_hf(tmp_path / "hf")
    assert not cfg.tie_embeddings and cfg.activation == "gelu" and cfg.d_ff == 48
    assert model.lm_head.weight is not model.backbone.embed.weight
    ids = _ids(len(tok))
    with torch.no_grad():
        assert (model(ids)[0] - hf(ids).logits).abs().max().item() <= ATOL


@pytest.mark.parametrize("files", ["json", "vocab"])
def test_tokenizer_ids_match(tmp_path, files):
    _, tok = save_gpt2(tmp_path / "hf", tokenizer_files=files)
    run = load_run(from_hf(tmp_path / "hf", tmp_path / "run"), device="cpu")
    assert run.tokenizer.encode(MIXED_TEXT) == tok(MIXED_TEXT)["input_ids"]
    assert run.tokenizer.decode(run.tokenizer.encode(MIXED_TEXT)) == MIXED_TEXT
    assert run.tokenizer.eos_id == tok.eos_token_id


def test_run_dir_is_ordinary_and_generates(tmp_path, capsys):
    hf, tok = save_gpt2(tmp_path / "hf")
    assert main(["convert", "from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "model_config.json", "model.safetensors", "tokenizer.json"):
        assert (run_dir / name).is_file()
    assert json.loads((run_dir / "model_config.json").read_text())["arch"] == "gpt"
    # greedy decoding through load_run + KV cache gives the tokens transformers gives
    run = load_run(run_dir, device="cpu")
    prompt = run.tokenizer.encode("Hello world")
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                          pad_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
    from lmforge.generate import generate_ids

    ours = generate_ids(run.model, prompt, max_new_tokens=len(ref), temperature=0)
    assert ours == ref
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--prompt", "Hello", "--max-new-tokens", "5",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip()


def test_export_loads_in_transformers(tmp_path):
    save_gpt2(tmp_path / "hf")
    from_hf(tmp_path / "hf", tmp_path / "run")
    assert main(["convert", "to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    run = load_run(tmp_path / "run", device="cpu")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = _ids(run.model_config.vocab_size)
    with torch.no_grad():
        assert (back(ids).logits - run.model(ids)[0]).abs().max().item() <= ATOL
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert hf_tok(MIXED_TEXT)["input_ids"] == run.tokenizer.encode(MIXED_TEXT)


def test_export_of_native_gpt_without_biases(tmp_path):
    """An lmforge-trained GPT (no biases, exact GELU, untied head) exports exactly."""
    from lmforge.tokenizers import train_tokenizer

    tok = train_tokenizer("char", ["abcdefgh ijk, lmn."], vocab_size=100)
    cfg = ModelConfig(arch="gpt", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                      max_len=16, bias=False, tie_embeddings=False, activation="gelu")
    model = build_model(cfg).eval()
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_config.json").write_text(cfg.to_json())
    tok.save(run / "tokenizer.json")
    save_weights(model, run / "model.safetensors")
    to_hf(run, tmp_path / "out")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = _ids(tok.vocab_size, T=16)
    with torch.no_grad():
        assert (back(ids).logits - model(ids)[0]).abs().max().item() <= ATOL
    # and the exported folder imports back to the same function
    again, _, _ = import_hf(tmp_path / "out")
    with torch.no_grad():
        assert (again(ids)[0] - model(ids)[0]).abs().max().item() <= ATOL


def test_classifier_on_imported_backbone(tmp_path):
    save_gpt2(tmp_path / "hf")
    model, _, cfg = import_hf(tmp_path / "hf")
    cfg.head, cfg.n_classes, cfg.pooling = "classifier", 3, "last"
    clf = build_model(cfg)
    clf.backbone.load_state_dict(model.backbone.state_dict())
    logits, loss = clf(_ids(cfg.vocab_size), torch.tensor([0, 2]))
    assert logits.shape == (2, 3) and loss.item() > 0


def test_key_map_is_explicit_and_invertible():
    cfg = ModelConfig(arch="gpt", vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_len=16)
    state = build_model(cfg).state_dict()
    hf_state = hf_gpt2.to_hf_state(state, cfg)
    assert hf_state["transformer.h.1.mlp.c_fc.weight"].shape == (32, 128)  # Conv1D (in, out)
    back = hf_gpt2.from_hf_state(hf_state, cfg)
    for name, tensor in back.items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0)
    assert set(back) | {"lm_head.weight"} == set(state)


# --------------------------------------------------------------------------- bad input


def test_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"not a Hugging Face checkpoint folder \(has notes.txt\)"):
        from_hf(tmp_path, tmp_path / "run")
    assert main(["convert", "from-hf", str(tmp_path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GPT2LMHeadModel, BertModel" in err


def test_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "gemma", "architectures": ["GemmaForCausalLM"]}))
    with pytest.raises(ConfigError, match=r"model_type='gemma' \(architectures GemmaForCausalLM\) "
                                          r"is not supported; supported: GPT2LMHeadModel \(gpt2\), "
                                          r"BertModel \(bert\), LlamaForCausalLM \(llama\)"):
        from_hf(tmp_path, tmp_path / "run")


def test_config_without_weights(tmp_path):
    save_gpt2(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    (tmp_path / "hf" / "tf_model.h5").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"has only tf_model.h5 \(TensorFlow\)"):
        from_hf(tmp_path / "hf", tmp_path / "run")


def test_mismatched_shape_names_the_tensor(tmp_path):
    save_gpt2(tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    state = load_file(str(path))
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(32, 100)
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'transformer.h.1.mlp.c_fc.weight' has shape "
                                              r"\(32, 100\), config.json implies \(32, 128\)"):
        from_hf(tmp_path / "hf", tmp_path / "run")


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    save_gpt2(tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    state = load_file(str(path))
    del state["transformer.h.0.ln_2.bias"]
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing tensor 'transformer.h.0.ln_2.bias'"):
        from_hf(tmp_path / "hf", tmp_path / "run")
    state["transformer.h.0.ln_2.bias"] = torch.zeros(32)
    state["transformer.h.2.ln_1.weight"] = torch.zeros(32)  # a third layer config.json lacks
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'transformer.h.2.ln_1.weight'"):
        from_hf(tmp_path / "hf", tmp_path / "run")


def test_malicious_pickle_is_refused_not_run(tmp_path, capsys):
    save_gpt2(tmp_path / "hf")
    marker = tmp_path / "pwned"
    write_malicious_bin(tmp_path / "hf", marker)
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: refused: torch.load\(weights_only=True\)"):
        from_hf(tmp_path / "hf", tmp_path / "run")
    assert main(["convert", "from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run2")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err
    assert not marker.exists()  # the payload never ran
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2" / "model.safetensors").exists()


def test_unsupported_gpt2_option(tmp_path):
    save_gpt2(tmp_path / "hf", scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx=True is not supported"):
        from_hf(tmp_path / "hf", tmp_path / "run")


def test_export_refuses_other_archs(tmp_path):
    from lmforge.tokenizers import train_tokenizer

    tok = train_tokenizer("char", ["abc"], vocab_size=50)
    cfg = ModelConfig(arch="lstm", vocab_size=tok.vocab_size, d_model=16, n_layers=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_config.json").write_text(cfg.to_json())
    tok.save(run / "tokenizer.json")
    save_weights(build_model(cfg), run / "model.safetensors")
    with pytest.raises(ConfigError, match=r"model.arch='lstm' has no Hugging Face counterpart"):
        to_hf(run, tmp_path / "out")
