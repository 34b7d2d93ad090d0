"""`lmforge evaluate RUN --data DIR --split test` works for every run type that a recipe in
configs/ produces: each recipe is trained for two steps at a tiny size, then evaluated
through the command line (the task registry picks the evaluator)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WORDS = "red green blue cat dog bird sun moon tree house".split()
SHRINK = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.d_ff=32",
          "model.max_len=16", "model.d_embed=0", "tokenizer.vocab_size=300", "train.max_steps=2",
          "train.batch_size=4", "train.eval_every=2", "train.eval_batches=1", "train.log_every=1",
          "train.warmup_steps=0", "train.progress=false", "train.threads=1", "train.precision=fp32"]


def make_data(folder: Path) -> Path:
    """One folder with every split format the tasks read: text, labelled TSV, parallel JSONL."""
    rng = random.Random(0)
    folder.mkdir()
    for split, n in (("train", 40), ("dev", 8), ("val", 8), ("test", 8)):
        sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6))).capitalize() + "."
                 for _ in range(n)]
        (folder / f"{split}.txt").write_text("\n".join(sents) + "\n")
        (folder / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s}\t{'pos' if 'sun' in s else 'neg'}\n" for s in sents))
        rows = [{"source": f"{a} {b} {c}", "target": a} for a, b, c in zip(sents, sents[1:], sents[2:])]
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def train_tiny(recipe: Path, data: Path, out: Path) -> None:
    from lmforge.pretrain import pretrain
    from lmforge.tasks import classify, seq2seq

    head = load_config(recipe).model.head
    quiet = lambda *a: None  # noqa: E731
    if head in ("causal_lm", "masked_lm"):
        pretrain(load_config(recipe, SHRINK + [f"data.path={data / 'train.txt'}", f"out={out}"]),
                 log=quiet)
    elif head == "classifier":
        classify.finetune(data, config=recipe, out=out, log=quiet, epochs=1,
                          overrides=SHRINK + ["model.n_classes=2"])
    else:
        extra = ["task.max_sentences=4", "task.sentence_len=8"] if head == "extractive" else \
            ["task.eval_decode=4"]
        seq2seq.finetune(task="summarize" if "summarize" in recipe.name else "translate", data=data,
                         config=recipe, out=out, log=quiet, overrides=SHRINK + extra,
                         **({} if "summarize" in recipe.name else {"src": "", "tgt": ""}))


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_evaluate_split_test_on_every_recipes_run(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("lmforge.train.loop.plot_metrics", lambda run_dir: None)
    data = make_data(tmp_path / "data")
    run = tmp_path / "run"
    train_tiny(recipe, data, run)
    capsys.readouterr()
    code = main(["evaluate", str(run), "--data", str(data), "--split", "test"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() and not captured.err.strip().startswith("Traceback")
