"""Llama-family checkpoints in and out: tiny random Llama (GQA, untied), Qwen2 (q/k/v bias),
Qwen3 (q/k norm, own head_dim) and Mistral (sliding window) built with transformers, imported
with the production converter; logits, greedy continuations (KV cache, ragged batches),
tokenizer ids, export round trips and refusals compared with transformers (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.convert.cli import from_hf, import_hf
from lmforge.convert.hf_llama import llama_from_hf
from lmforge.generate import DecodeOptions
from lmforge.generate.causal import generate_tokens
from lmforge.generate.text import encode_prompt
from lmforge.convert.cli import resolve_base
from lmforge.run import load_run
from lmforge.train.checkpoint import CheckpointError

from .hf_helpers import MIXED_TEXT, quiet, transformers

ATOL = 1e-4
ASSETS = Path(__file__).resolve().parents[2] / "lmforge" / "assets" / "tinyshakespeare.txt"
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=None,
             eos_token_id=None, pad_token_id=0)
FAMILIES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(tie_word_embeddings=False, rope_theta=500000.0)),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(head_dim=16, tie_word_embeddings=False)),
    "mistral": ("MistralForCausalLM", "MistralConfig", dict(sliding_window=4, num_key_value_heads=1)),
    # Qwen's window applies from layer max_window_layers on: here layer 1 only
    "qwen2-window": ("Qwen2ForCausalLM", "Qwen2Config", dict(use_sliding_window=True, sliding_window=4,
                                                             max_window_layers=1)),
}
# family -> (qkv_bias, qk_norm, sliding_window, sliding_window_start) after import
EXPECTED = {"llama": (False, False, 0, 0), "qwen2": (True, False, 0, 0), "qwen3": (False, True, 0, 0),
            "mistral": (False, False, 4, 0), "qwen2-window": (True, False, 4, 1)}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shakespeare_lines(n: int = 300) -> list[str]:
    lines = [ln for ln in ASSETS.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return lines[:n]


def bpe_tokenizer(post: str = "bos") -> HFTokenizer:
    """A byte-level BPE tokenizer.json (300 ids, Llama 3-style specials). post: "bos" = a
    TemplateProcessing adding <|begin_of_text|> (Llama 3), "bytelevel" = none (Qwen, SmolLM)."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(shakespeare_lines(2000) + [MIXED_TEXT], trainer)
    if post == "bos":
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
            special_tokens=[("<|begin_of_text|>", 0)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def write_tokenizer(folder: Path, post: str = "bos", **config) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bpe_tokenizer(post).save(str(folder / "tokenizer.json"))
    data = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
            "eos_token": "<|im_end|>", "chat_template": CHATML, "model_max_length": 64, **config}
    (folder / "tokenizer_config.json").write_text(json.dumps(data), encoding="utf-8")


def randomise(model) -> None:
    """Weights far from the tiny default init (and non-zero biases, non-unit norms), so a
    wrong bias, norm or rotation changes the logits and greedy ties are unlikely."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def save_family(folder: Path, family: str, shard: str | None = None, **overrides):
    """A random HF model of `family` + tokenizer files in `folder`; returns the model."""
    quiet()
    cls, config_cls, extra = FAMILIES[family]
    config = getattr(transformers, config_cls)(vocab_size=300, **{**SMALL, **extra, **overrides})
    model = getattr(transformers, cls)(config).eval()
    randomise(model)
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    write_tokenizer(folder)
    return model


def _ids(T: int = 24) -> torch.Tensor:
    return torch.randint(4, 300, (2, T), generator=torch.Generator().manual_seed(1))


def _hf_greedy(hf, prompts: list[list[int]], new: int) -> list[list[int]]:
    P = max(len(p) for p in prompts)  # left padding, as for any decoder-only batch
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                      pad_token_id=0, eos_token_id=None)
    return out[:, P:].tolist()


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_and_greedy_continuations_match(tmp_path, family):
    hf = save_family(tmp_path / "hf", family)
    run = load_run(from_hf(tmp_path / "hf", tmp_path / "run"), device="cpu")
    cfg = run.model_config
    assert cfg.arch == "llama"
    assert (cfg.qkv_bias, cfg.qk_norm, cfg.sliding_window, cfg.sliding_window_start) == EXPECTED[family]
    assert cfg.tie_embeddings == FAMILIES[family][2].get("tie_word_embeddings", False)
    ids = _ids()
    with torch.no_grad():
        expected, got = hf(ids).logits, run.model(ids)[0]
    assert (got - expected).abs().max().item() <= ATOL
    # greedy with the KV cache: one prompt, then a ragged (left-padded) batch
    prompts = [ids[0, :9].tolist(), ids[1, :5].tolist()]
    ours = generate_tokens(run.model, prompts, DecodeOptions(max_new_tokens=12, temperature=0))
    assert [h[0].tokens for h in ours] == _hf_greedy(hf, prompts, 12)
    single = generate_tokens(run.model, prompts[:1], DecodeOptions(max_new_tokens=12, temperature=0))
    assert single[0][0].tokens == _hf_greedy(hf, prompts[:1], 12)[0]


def test_window_and_theta_are_used(tmp_path):
    """The features the parity test relies on change the output when switched off."""
    hf = save_family(tmp_path / "m", "mistral")
    cfg, state = llama_from_hf(hf.config.to_dict(), hf.state_dict())
    from lmforge.models.build import build_model

    ids = _ids()
    for change in ({"sliding_window": 0}, {"rope_theta": 20000.0}):
        model = build_model(type(cfg)(**{**cfg.__dict__, **change})).eval()
        model.load_state_dict(state, strict=False)
        with torch.no_grad():
            assert (model(ids)[0] - hf(ids).logits).abs().max().item() > 1e-2


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 16}])
def test_rope_scaling_matches(tmp_path, scaling):
    hf = save_family(tmp_path / "hf", "llama", rope_scaling=dict(scaling), head_dim=16,
                     num_attention_heads=2, num_key_value_heads=1)
    model, _, cfg = import_hf(tmp_path / "hf")
    assert cfg.rope_scaling["type"] == scaling["rope_type"] and cfg.rope_theta == 500000.0
    ids = _ids(40)
    with torch.no_grad():
        assert (model(ids)[0] - hf(ids).logits).abs().max().item() <= ATOL


@pytest.mark.parametrize("rope,expected", [
    ({"rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 2.0}},
     (500000.0, {"type": "linear", "factor": 2.0})),
    ({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
     (500000.0, {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_len": 8192})),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}, (1000000.0, {})),
    ({}, (10000.0, {})),
])
def test_transformers_4_and_5_rope_spellings(rope, expected):
    from lmforge.convert.hf_llama import config_from_hf

    base = {"model_type": "llama", "vocab_size": 40, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 64}
    cfg = config_from_hf({**base, **rope})
    assert (cfg.rope_theta, cfg.rope_scaling) == expected


def test_sharded_folder_imports_like_one_file(tmp_path):
    hf = save_family(tmp_path / "hf", "qwen3", shard="30KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "hf").glob("model-*-of-*.safetensors"))) > 1
    model, _, _ = import_hf(tmp_path / "hf")
    ids = _ids()
    with torch.no_grad():
        assert (model(ids)[0] - hf(ids).logits).abs().max().item() <= ATOL


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("post,config,bos", [
    ("bos", {}, True),  # Llama 3: the tokenizer.json's own post-processor adds BOS
    ("bytelevel", {}, False),  # Qwen / SmolLM: nothing added
    # transformers 5 drops add_bos_token / add_eos_token when a tokenizer.json exists
    ("bytelevel", {"add_bos_token": True}, False),
    ("bos", {"add_bos_token": False}, True),
])
def test_tokenizer_ids_equal_transformers(tmp_path, post, config, bos):
    write_tokenizer(tmp_path / "hf", post, **config)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    from lmforge.tokenizers import load_tokenizer

    tok = load_tokenizer(tmp_path / "hf")
    tok.save(tmp_path / "tok.json")
    tok = load_tokenizer(tmp_path / "tok.json")  # what a run reloads: the rule is baked in
    lines = shakespeare_lines(300) + [MIXED_TEXT, "<|im_start|>user\nhi there<|im_end|>\n", " x  y"]
    for line in lines:
        assert tok.encode(line, add_special=True) == hf_tok(line)["input_ids"], line
        assert tok.encode(line) == hf_tok(line, add_special_tokens=False)["input_ids"], line
        assert encode_prompt(tok, line) == hf_tok(line)["input_ids"], line
    assert tok.options["add_bos"] is bos
    assert tok.decode(tok.encode(MIXED_TEXT)) == MIXED_TEXT


@pytest.mark.parametrize("add_bos,add_eos", [(True, False), (False, False), (True, True)])
def test_set_bos_eos_matches_transformers(tmp_path, add_bos, add_eos):
    """A tokenizer rebuilt from another format (GGUF) states its BOS/EOS rule; transformers
    loading the saved file encodes the same."""
    from lmforge.tokenizers import load_tokenizer
    from lmforge.tokenizers.hf import set_bos_eos

    write_tokenizer(tmp_path / "hf", "bytelevel")
    tok = set_bos_eos(load_tokenizer(tmp_path / "hf"), add_bos, add_eos)
    assert (tok.options["add_bos"], tok.options["add_eos"]) == (add_bos, add_eos)
    tok.save(tmp_path / "hf" / "tokenizer.json")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for line in shakespeare_lines(50) + [MIXED_TEXT]:
        assert tok.encode(line, add_special=True) == hf_tok(line)["input_ids"]


def test_run_generates_text_like_transformers(tmp_path, capsys):
    """Text in, text out: the prompt gets BOS as transformers' tokenizer gives it, and the
    greedy continuation equals transformers' generate on those ids."""
    hf = save_family(tmp_path / "hf", "llama")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    run = load_run(from_hf(tmp_path / "hf", tmp_path / "run"), device="cpu")
    prompt = "ROMEO: my love"
    ids = hf_tok(prompt)["input_ids"]
    assert ids[0] == hf_tok.bos_token_id
    gen = run.generate(prompt, max_new_tokens=10, temperature=0, return_scores=True)
    assert gen.ids == _hf_greedy(hf, [ids], 10)[0]
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", prompt, "--max-new-tokens", "10",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith(prompt + gen.text)


def test_run_keeps_tokenizer_config_and_base_accepts_hf_folder(tmp_path):
    save_family(tmp_path / "hf", "qwen2")
    run_dir = from_hf(tmp_path / "hf", tmp_path / "run")
    data = json.loads((run_dir / "tokenizer_config.json").read_text())
    assert data["chat_template"] == CHATML and data["add_bos_token"] is True
    assert data["bos_token"] == "<|begin_of_text|>" and data["eos_token"] == "<|im_end|>"
    assert {"pad_token", "unk_token", "add_eos_token"} <= set(data)
    base = resolve_base(tmp_path / "hf", log=lambda *_: None)
    assert json.loads((base / "model_config.json").read_text())["arch"] == "llama"


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("family", ["llama", "qwen3", "mistral", "qwen2-window"])
def test_export_round_trip_loads_in_transformers(tmp_path, family):
    save_family(tmp_path / "hf", family)
    run = load_run(from_hf(tmp_path / "hf", tmp_path / "run"), device="cpu")
    assert main(["convert", "to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(back).__name__ == FAMILIES[family][0]
    ids = _ids()
    with torch.no_grad():
        assert (back(ids).logits - run.model(ids)[0]).abs().max().item() <= ATOL
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert hf_tok(MIXED_TEXT)["input_ids"] == encode_prompt(run.tokenizer, MIXED_TEXT)
    assert hf_tok.chat_template == CHATML


def test_scratch_llama_exports_to_transformers(tmp_path):
    from lmforge.config import ModelConfig
    from lmforge.convert.hf_llama import export_state
    from lmforge.models.build import build_model

    cfg = ModelConfig(arch="llama", vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      max_len=32, rope_scaling={"type": "linear", "factor": 2.0})
    model = build_model(cfg).eval()
    hf_config, state = export_state(model, cfg, None)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config)).eval()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied: the embedding
    ids = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)[0]).abs().max().item() <= ATOL


# --------------------------------------------------------------------------- bad input


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_unsupported_architecture_is_named(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(
        {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]}))
    err = _one_line_error(capsys, ["convert", "from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r")])
    assert "Gemma2ForCausalLM" in err and "Qwen3ForCausalLM" in err and "MistralForCausalLM" in err
    assert not (tmp_path / "r").exists()


def test_unsupported_rope_type_is_named(tmp_path, capsys):
    save_family(tmp_path / "hf", "llama")
    data = json.loads((tmp_path / "hf" / "config.json").read_text())
    data["rope_parameters"] = {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(data))
    err = _one_line_error(capsys, ["convert", "from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r")])
    assert "'yarn'" in err and "llama3" in err


def test_missing_shard_is_named(tmp_path, capsys):
    save_family(tmp_path / "hf", "llama", shard="30KB")
    shard = sorted((tmp_path / "hf").glob("model-*-of-*.safetensors"))[1]
    shard.unlink()
    err = _one_line_error(capsys, ["convert", "from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r")])
    assert shard.name in err and "missing" in err
    assert not (tmp_path / "r" / "model_config.json").exists()


def test_pickle_only_checkpoint_is_refused(tmp_path, capsys):
    hf = save_family(tmp_path / "hf", "llama")
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    err = _one_line_error(capsys, ["convert", "from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r")])
    assert "pytorch_model.bin" in err and "refused" in err and "safetensors" in err


def test_llama_from_hf_names_a_misshapen_tensor():
    quiet()
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=40, **SMALL))
    state = dict(hf.state_dict())
    state["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(3, 32)
    with pytest.raises(CheckpointError, match=r"model.layers.1.self_attn.k_proj.weight.*\(3, 32\)"):
        llama_from_hf(hf.config.to_dict(), state)
    with pytest.raises(ConfigError, match="attention_bias=True is not supported"):
        llama_from_hf({**hf.config.to_dict(), "attention_bias": True}, hf.state_dict())
