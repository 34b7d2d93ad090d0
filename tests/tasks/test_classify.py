"""Text classification end to end: pooling ignores padding, a toy task is learned to 100 %,
evaluate and predict agree, LoRA / frozen / base runs, and bad input gets one-line errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import ConfigError, ModelConfig, load_config
from lmforge.models.build import build_model
from lmforge.tasks.classify import (ClassificationTask, TextClassifier, evaluate_cli, finetune,
                                    parse_options, predict_cli)

CONFIGS = Path(__file__).parents[2] / "configs"

POSITIVE = ["good", "great", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "dull", "poor"]
FILLER = ["the", "film", "was", "a", "plot", "and", "it", "story", "very", "quite"]

BACKBONES = {
    "rnn": {},
    "lstm-bi": {"arch": "lstm", "bidirectional": True},
    "gru": {"arch": "gru"},
    "cnn": {"arch": "cnn", "n_layers": 2},
    "kim-cnn": {"arch": "cnn", "filter_widths": [2, 3]},
    "rcnn": {"arch": "rcnn"},
    "gpt": {"arch": "gpt", "n_heads": 2},
}


def toy_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Texts of filler words plus one sentiment word; the label says which kind."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.choices(FILLER, k=rng.randint(2, 9))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


def write_split(path: Path, rows) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture
def toy_data(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    write_split(folder / "train.tsv", toy_rows(240, 0))
    write_split(folder / "dev.tsv", toy_rows(40, 1))
    write_split(folder / "test.tsv", toy_rows(40, 2))
    return folder


TINY = {"model": {"arch": "lstm", "d_model": 24, "d_embed": 16, "bidirectional": False,
                  "pooling": "max", "dropout": 0.0, "max_len": 16},
        "tokenizer": {"kind": "word", "vocab_size": 100},
        "train": {"batch_size": 16, "lr": 0.01, "optimizer": "adam", "schedule": "constant",
                  "progress": False, "patience": 0, "log_every": 5, "threads": 1, "seed": 3}}


def quiet(*args, **kwargs):
    pass


@pytest.fixture
def no_plots(monkeypatch):
    # the trainer redraws its PNG curves after every evaluation (~0.5 s each); only the
    # end-to-end test needs them
    monkeypatch.setattr("lmforge.train.loop.plot_metrics", lambda run_dir: None)


# --------------------------------------------------------------------------- the head


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "cls"])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_padding_never_changes_a_prediction(name, pooling):
    torch.manual_seed(0)
    cfg = ModelConfig(**{"arch": "rnn", "head": "classifier", "vocab_size": 30, "d_model": 16,
                         "n_layers": 1, "max_len": 16, "n_classes": 3, "pooling": pooling,
                         **BACKBONES[name]})
    model = build_model(cfg).eval()
    lengths = [9, 5, 1, 3]
    ids = torch.randint(4, 30, (4, 9))
    mask = torch.arange(9)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    ids = ids.masked_fill(~mask, 0)
    batched = model(ids, mask=mask)[0]
    for i, n in enumerate(lengths):
        alone = model(ids[i: i + 1, :n])[0]
        torch.testing.assert_close(batched[i: i + 1], alone, atol=1e-5, rtol=1e-4)
        # more padding, or padding of other token ids, changes nothing either
        extra = torch.cat([ids[i: i + 1, :n], torch.randint(4, 30, (1, 6))], dim=1)
        extra_mask = torch.arange(n + 6)[None] < n
        torch.testing.assert_close(model(extra, mask=extra_mask)[0], alone, atol=1e-5, rtol=1e-4)
    # left padding (Keras's default) gives the same predictions as right padding
    left = torch.stack([torch.roll(ids[i], 9 - n) for i, n in enumerate(lengths)])
    left_mask = torch.stack([torch.roll(mask[i], 9 - n) for i, n in enumerate(lengths)])
    torch.testing.assert_close(model(left, mask=left_mask)[0], batched, atol=1e-5, rtol=1e-4)


def test_binary_head_is_sigmoid_bce_and_class_weights_reweight():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="lstm", head="classifier", vocab_size=20, d_model=8, n_layers=1,
                      extra={"binary_head": True})
    model = build_model(cfg)
    ids, y = torch.randint(0, 20, (6, 5)), torch.tensor([0, 1, 1, 0, 1, 1])
    logits, loss = model(ids, y)
    assert logits.shape == (6, 1)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits[:, 0], y.float()))
    probs = model.probabilities(logits)
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits[:, 0]))
    weighted = build_model(ModelConfig(**{**cfg.__dict__, "extra": {"class_weights": [1.0, 3.0]}}))
    logits, loss = weighted(ids, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, weight=torch.tensor([1.0, 3.0])))


# --------------------------------------------------------------------------- end to end


def test_tiny_classifier_learns_toy_task_and_evaluate_predict_agree(toy_data, tmp_path, capsys):
    run = finetune(toy_data, config=TINY, out=tmp_path / "run", epochs=6, log=quiet)
    for name in ("config.yaml", "model_config.json", "tokenizer.json", "labels.json",
                 "model.safetensors", "best.safetensors", "trainer_state.pt", "metrics.csv",
                 "summary.json", "eval/test/scores.json", "eval/test/confusion.png",
                 "eval/test/predictions.tsv"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dev"]["accuracy"] == 1.0 and summary["test"]["accuracy"] == 1.0
    assert json.loads((run / "labels.json").read_text()) == {"labels": ["neg", "pos"]}
    rows = (run / "metrics.csv").read_text().splitlines()
    assert sum(",val," in r for r in rows) == 6  # one dev evaluation per epoch

    capsys.readouterr()
    assert evaluate_cli([str(run), "--data", str(toy_data / "test.tsv")]) == 0
    shown = capsys.readouterr().out
    assert "accuracy 1.0000" in shown and "macro-F1 1.0000" in shown
    lines = (run / "eval" / "test" / "predictions.tsv").read_text().splitlines()[1:]
    texts = [line.split("\t")[0] for line in lines]
    assert predict_cli([str(run), *texts[:5]]) == 0
    predicted = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    for line, (label, prob, text) in zip(lines, predicted):
        cells = line.split("\t")
        assert (cells[0], cells[2]) == (text, label)
        assert float(cells[3]) == pytest.approx(float(prob), abs=1e-4)
    clf = TextClassifier.load(run)
    assert clf.predict(["a superb film"])[0]["label"] == "pos"
    assert clf.predict(["the plot was dull"])[0]["label"] == "neg"


def test_resume_continues_where_the_run_stopped(toy_data, tmp_path, no_plots):
    straight = finetune(toy_data, config=TINY, out=tmp_path / "a", epochs=3, log=quiet)
    part = finetune(toy_data, config=TINY, out=tmp_path / "b", epochs=3,
                    overrides=["train.max_steps=20", "task.epochs=0", "train.eval_every=15"], log=quiet)
    assert json.loads((part / "summary.json").read_text())["steps"] == 20
    resumed = finetune(resume=part, overrides=["task.epochs=3"], log=quiet)
    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((resumed / "summary.json").read_text())
    assert b["steps"] == a["steps"] == 45
    from safetensors.torch import load_file

    wa, wb = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key])


def make_base_run(folder: Path, texts: list[str]) -> Path:
    """A tiny causal-LM GPT run (what `lmforge pretrain` leaves), without training it."""
    from lmforge.tokenizers import train_tokenizer
    from lmforge.train.checkpoint import save_weights

    folder.mkdir()
    tok = train_tokenizer("char", texts, vocab_size=60)
    cfg = ModelConfig(arch="gpt", vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_len=64)
    torch.manual_seed(0)
    save_weights(build_model(cfg), folder / "model.safetensors")
    (folder / "model_config.json").write_text(cfg.to_json())
    tok.save(folder / "tokenizer.json")
    return folder


def test_lora_on_a_base_run_trains_adapters_and_merges(toy_data, tmp_path, no_plots):
    texts = [t for t, _ in toy_rows(50, 5)]
    base = make_base_run(tmp_path / "base", texts)
    run = finetune(toy_data, base=base, out=tmp_path / "lora", epochs=2, mode="lora",
                   lora={"rank": 4, "alpha": 8, "targets": ["attn.qkv", "attn.proj"]},
                   overrides=["train.progress=false", "train.lr=3e-3", "train.threads=1"], log=quiet)
    cfg = json.loads((run / "model_config.json").read_text())
    assert cfg["head"] == "classifier" and cfg["extra"]["lora"]["rank"] == 4
    assert (run / "merged" / "model.safetensors").is_file()
    assert "lora" not in json.loads((run / "merged" / "model_config.json").read_text())["extra"]
    adapted, merged = TextClassifier.load(run), TextClassifier.load(run / "merged")
    sample = texts[:8]
    torch.testing.assert_close(torch.tensor(adapted.predict_proba(sample)),
                               torch.tensor(merged.predict_proba(sample)), atol=1e-5, rtol=1e-4)
    # the frozen GPT weights are the base's: only adapters and head moved
    from safetensors.torch import load_file

    before, after = load_file(str(base / "model.safetensors")), load_file(str(run / "model.safetensors"))
    torch.testing.assert_close(after["backbone.blocks.0.attn.qkv.base.weight"],
                               before["backbone.blocks.0.attn.qkv.weight"])
    torch.testing.assert_close(after["backbone.embed.weight"], before["backbone.embed.weight"])


def test_frozen_backbone_trains_only_the_head(toy_data, tmp_path, no_plots):
    run = finetune(toy_data, config=TINY, out=tmp_path / "frozen", epochs=1, mode="frozen", log=quiet)
    clf = TextClassifier.load(run, weights="last")
    torch.manual_seed(3)  # the run's train.seed: the same initial backbone
    fresh = build_model(clf.run.model_config)
    for (name, p), (_, q) in zip(clf.model.backbone.named_parameters(), fresh.backbone.named_parameters()):
        torch.testing.assert_close(p.cpu(), q, msg=name)


# --------------------------------------------------------------------------- bad input


def test_unknown_dev_labels_are_named(toy_data, tmp_path):
    write_split(toy_data / "dev.tsv", toy_rows(6, 1) + [("so so", "neutral")])
    with pytest.raises(ConfigError, match=r"dev.tsv: 1 rows have labels the training data never had: 'neutral'"):
        finetune(toy_data, config=TINY, out=tmp_path / "x", epochs=1, log=quiet)


def test_base_tokenizer_that_does_not_match_the_data_is_refused(toy_data, tmp_path):
    base = make_base_run(tmp_path / "base", ["0123456789 +-*/"])
    with pytest.raises(ConfigError, match="base run's tokenizer does not match the data"):
        finetune(toy_data, base=base, out=tmp_path / "x", epochs=1, log=quiet)


def test_one_class_training_data_warns(tmp_path, no_plots):
    folder = tmp_path / "one"
    folder.mkdir()
    write_split(folder / "train.tsv", [(t, "pos") for t, _ in toy_rows(20, 0)])
    with pytest.warns(UserWarning, match="every label is 'pos'"):
        finetune(folder / "train.tsv", config=TINY, out=tmp_path / "x", epochs=1,
                 labels=["neg", "pos"], log=quiet)


def test_unknown_task_option_suggests_the_right_one(toy_data, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'task.epoch'.*did you mean 'epochs'"):
        finetune(toy_data, config=TINY, out=tmp_path / "x", epoch=1, log=quiet)


@pytest.mark.parametrize("name", ["sentiment-simplernn.yaml", "sentiment-lstm.yaml", "sentiment-best.yaml"])
def test_sentiment_recipes_load_and_build(name):
    cfg = load_config(CONFIGS / name)
    opts = parse_options(cfg.task)
    cfg.model.vocab_size = cfg.tokenizer.vocab_size
    cfg.model.head = "classifier"
    if opts.binary_head:
        cfg.model.extra = {**cfg.model.extra, "binary_head": True}
    model = build_model(cfg.model)
    logits, loss = model(torch.randint(0, 100, (2, 7)), torch.tensor([0, 1]))
    assert loss.ndim == 0 and logits.shape[0] == 2
    assert ClassificationTask.monitor == ("accuracy", "max")
