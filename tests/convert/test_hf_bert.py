"""BERT in and out: parity with `transformers` (masked-LM logits, encoder hidden states,
pooler), tokenizer ids, export, a classifier on an imported encoder, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from .hf_helpers import MIXED_TEXT, save_bert, transformers

from lmforge.cli import main  # noqa: E402
from lmforge.config import ConfigError, ModelConfig  # noqa: E402
from lmforge.convert import hf_bert  # noqa: E402
from lmforge.convert.cli import from_hf, import_hf, to_hf  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402
from lmforge.run import load_run  # noqa: E402
from lmforge.train.checkpoint import CheckpointError, save_weights  # noqa: E402

ATOL = 1e-4


def _batch(vocab: int, B: int = 3, T: int = 20):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    types = torch.randint(0, 2, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 13:] = False  # a padded row
    return ids, types, mask


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_masked_lm_logits_match_transformers(tmp_path, fmt):
    hf, tok = save_bert(tmp_path / "hf", fmt=fmt)
    model, _, cfg = import_hf(tmp_path / "hf")
    assert cfg.arch == "bert" and cfg.head == "masked_lm" and cfg.norm_eps == 1e-12
    assert model.decoder.weight is model.backbone.embed.weight  # tied, as in BERT
    ids, types, mask = _batch(len(tok))
    with torch.no_grad():
        expected = hf(ids, token_type_ids=types, attention_mask=mask.long()).logits
        got, _ = model(ids, token_type_ids=types, mask=mask)
    assert (got - expected)[mask].abs().max().item() <= ATOL  # padded positions are don't-care
    with torch.no_grad():  # no mask, no token types: the defaults agree too
        assert (model(ids)[0] - hf(ids).logits).abs().max().item() <= ATOL


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_encoder_hidden_states_and_pooler_match(tmp_path, fmt, capsys):
    hf, tok = save_bert(tmp_path / "hf", cls="BertModel", fmt=fmt)
    assert main(["convert", "from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    assert "masked-LM head" in capsys.readouterr().out  # reported as starting fresh
    model = load_run(tmp_path / "run", device="cpu").model
    ids, types, mask = _batch(len(tok))
    with torch.no_grad():
        out = hf(ids, token_type_ids=types, attention_mask=mask.long())
        hidden, state = model.backbone(ids, mask=mask, token_type_ids=types)
        pooled = model.backbone.pool(hidden)
    assert state is None
    assert (hidden - out.last_hidden_state)[mask].abs().max().item() <= ATOL
    assert (pooled - out.pooler_output).abs().max().item() <= ATOL
    source = json.loads((tmp_path / "run" / "source.json").read_text())
    assert source["fresh_tensors"] and all(n.startswith("cls.") for n in source["fresh_tensors"])


@pytest.mark.parametrize("files", ["json", "vocab"])
def test_tokenizer_ids_match(tmp_path, files):
    _, tok = save_bert(tmp_path / "hf", tokenizer_files=files)
    run = load_run(from_hf(tmp_path / "hf", tmp_path / "run"), device="cpu")
    assert run.tokenizer.encode(MIXED_TEXT, add_special=True) == tok(MIXED_TEXT)["input_ids"]
    assert (run.tokenizer.mask_id, run.tokenizer.cls_id, run.tokenizer.pad_id) == \
        (tok.mask_token_id, tok.cls_token_id, tok.pad_token_id)


def test_export_loads_in_transformers(tmp_path):
    save_bert(tmp_path / "hf")
    from_hf(tmp_path / "hf", tmp_path / "run")
    assert main(["convert", "to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    run = load_run(tmp_path / "run", device="cpu")
    back = transformers.BertForMaskedLM.from_pretrained(tmp_path / "out").eval()
    ids, types, mask = _batch(run.model_config.vocab_size)
    with torch.no_grad():
        expected = run.model(ids, token_type_ids=types, mask=mask)[0]
        got = back(ids, token_type_ids=types, attention_mask=mask.long()).logits
    assert (got - expected)[mask].abs().max().item() <= ATOL
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert hf_tok(MIXED_TEXT)["input_ids"] == run.tokenizer.encode(MIXED_TEXT, add_special=True)


def test_export_of_native_bert_without_biases(tmp_path):
    """An lmforge-built BERT (no biases, wordpiece tokenizer) exports exactly, pooler included."""
    from lmforge.tokenizers import train_tokenizer

    tok = train_tokenizer("wordpiece", ["the cat sat on the mat", "a dog ran"] * 5, vocab_size=60)
    cfg = ModelConfig(arch="bert", head="masked_lm", vocab_size=tok.vocab_size, d_model=32,
                      n_layers=2, n_heads=4, max_len=16, bias=False, norm_eps=1e-12,
                      extra={"type_vocab_size": 3})
    model = build_model(cfg).eval()
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_config.json").write_text(cfg.to_json())
    tok.save(run / "tokenizer.json")
    save_weights(model, run / "model.safetensors")
    to_hf(run, tmp_path / "out")
    back = transformers.BertForPreTraining.from_pretrained(tmp_path / "out").eval()
    ids, _, mask = _batch(tok.vocab_size, T=16)
    types = torch.randint(0, 3, ids.shape)
    with torch.no_grad():
        out = back.bert(ids, token_type_ids=types, attention_mask=mask.long())
        ours = model.backbone(ids, mask=mask, token_type_ids=types)[0]
        logits = back(ids, token_type_ids=types, attention_mask=mask.long()).prediction_logits
    assert (out.last_hidden_state - ours)[mask].abs().max().item() <= ATOL
    assert (out.pooler_output - model.backbone.pool(ours)).abs().max().item() <= ATOL
    assert (logits - model(ids, token_type_ids=types, mask=mask)[0])[mask].abs().max().item() <= ATOL


def test_classifier_export_is_a_bert_model(tmp_path):
    """A classifier run over BERT exports its encoder as a BertModel."""
    from lmforge.tokenizers import train_tokenizer

    tok = train_tokenizer("wordpiece", ["the cat sat on the mat"] * 5, vocab_size=40)
    cfg = ModelConfig(arch="bert", head="classifier", n_classes=2, pooling="cls",
                      vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_len=16)
    model = build_model(cfg).eval()
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_config.json").write_text(cfg.to_json())
    tok.save(run / "tokenizer.json")
    save_weights(model, run / "model.safetensors")
    to_hf(run, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertModel"]
    back = transformers.BertModel.from_pretrained(tmp_path / "out").eval()
    ids, _, _ = _batch(tok.vocab_size, T=16)
    with torch.no_grad():
        assert (back(ids).last_hidden_state - model.backbone(ids)[0]).abs().max().item() <= ATOL


def test_old_checkpoint_names_gamma_beta_and_nsp_head(tmp_path):
    """TF-era names (LayerNorm.gamma/beta), a copy of the tied decoder and an NSP head load."""
    hf, tok = save_bert(tmp_path / "hf", cls="BertForPreTraining")
    path = tmp_path / "hf" / "model.safetensors"
    state = load_file(str(path))
    renamed = {}
    for name, tensor in state.items():
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[name] = tensor.clone()
    renamed["cls.predictions.decoder.weight"] = renamed["bert.embeddings.word_embeddings.weight"].clone()
    save_file(renamed, str(path), metadata={"format": "pt"})
    model, _, _ = import_hf(tmp_path / "hf")
    ids, types, mask = _batch(len(tok))
    with torch.no_grad():
        expected = hf(ids, token_type_ids=types, attention_mask=mask.long())
        got = model(ids, token_type_ids=types, mask=mask)[0]
        pooled = model.backbone.pool(model.backbone(ids, mask=mask, token_type_ids=types)[0])
    assert (got - expected.prediction_logits)[mask].abs().max().item() <= ATOL
    hidden = hf.bert(ids, token_type_ids=types, attention_mask=mask.long()).pooler_output
    assert (pooled - hidden).abs().max().item() <= ATOL


def test_key_maps_round_trip():
    cfg = ModelConfig(arch="bert", head="masked_lm", vocab_size=50, d_model=32, n_layers=2,
                      n_heads=4, max_len=16)
    state = build_model(cfg).state_dict()
    hf_state = hf_bert.to_hf_state(state, cfg)
    assert hf_state["bert.encoder.layer.1.attention.self.key.weight"].shape == (32, 32)
    back = hf_bert.from_hf_state(hf_state, cfg)
    for name, tensor in back.items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0)
    assert set(back) | {"decoder.weight"} == set(state)


def _finetune_classify(tmp_path, base) -> dict:
    """One epoch of `lmforge finetune classify --base BASE` on a toy TSV; the run's model config."""
    rows = ["sentence\tlabel"] + [f"hello world {i}\tpos" if i % 2 else f"the lazy dog {i}\tneg"
                                  for i in range(24)]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("\n".join(rows[:9]) + "\n", encoding="utf-8")
    rc = main(["finetune", "classify", "--base", str(base), "--data",
               str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"),
               "--out", str(tmp_path / "clf"), "--epochs", "1", "train.batch_size=8",
               "train.progress=false", "model.pooling=cls", "task.add_special=true"])
    assert rc == 0
    return json.loads((tmp_path / "clf" / "model_config.json").read_text())


def test_finetune_classify_on_imported_bert(tmp_path):
    """`lmforge finetune classify --base RUN` accepts a converted BERT run."""
    pytest.importorskip("lmforge.tasks.classify")
    save_bert(tmp_path / "hf")
    from_hf(tmp_path / "hf", tmp_path / "bert")
    cfg = _finetune_classify(tmp_path, tmp_path / "bert")
    assert cfg["arch"] == "bert" and cfg["head"] == "classifier"


def test_finetune_classify_directly_on_a_hugging_face_folder(tmp_path, monkeypatch):
    """`--base` may name the Hugging Face folder itself: it is converted once, then cached."""
    pytest.importorskip("lmforge.tasks.classify")
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    save_bert(tmp_path / "hf")
    assert _finetune_classify(tmp_path, tmp_path / "hf")["arch"] == "bert"
    assert len(list((tmp_path / "cache" / "hf").iterdir())) == 1


# --------------------------------------------------------------------------- bad input


def test_mismatched_shape_names_the_tensor(tmp_path):
    save_bert(tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    state = load_file(str(path))
    state["bert.encoder.layer.0.attention.self.value.weight"] = torch.zeros(32, 31)
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'bert.encoder.layer.0.attention.self.value.weight' "
                                              r"has shape \(32, 31\), config.json implies \(32, 32\)"):
        from_hf(tmp_path / "hf", tmp_path / "run")


def test_missing_encoder_tensor_is_named(tmp_path):
    save_bert(tmp_path / "hf", cls="BertModel")
    path = tmp_path / "hf" / "model.safetensors"
    state = load_file(str(path))
    del state["encoder.layer.1.intermediate.dense.weight"]
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing tensor 'bert.encoder.layer.1.intermediate.dense.weight'"):
        from_hf(tmp_path / "hf", tmp_path / "run")


def test_tokenizer_larger_than_model(tmp_path):
    save_bert(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["vocab_size"] = 10
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"the tokenizer has \d+ tokens but config.json vocab_size is 10"):
        from_hf(tmp_path / "hf", tmp_path / "run")


def test_unsupported_bert_variant(tmp_path):
    save_bert(tmp_path / "hf", position_embedding_type="relative_key")
    with pytest.raises(ConfigError, match="position_embedding_type='relative_key' is not supported"):
        from_hf(tmp_path / "hf", tmp_path / "run")


def test_existing_run_is_not_overwritten(tmp_path):
    save_bert(tmp_path / "hf")
    from_hf(tmp_path / "hf", tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run"):
        from_hf(tmp_path / "hf", tmp_path / "run")
    from_hf(tmp_path / "hf", tmp_path / "run", force=True)
