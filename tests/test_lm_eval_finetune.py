import math

from lmforge.cli import main
from lmforge.run import load_run
from lmforge.tasks.lm_eval import evaluate_lm

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.max_len=32",
        "train.batch_size=8", "train.max_steps=30", "train.eval_every=30", "train.eval_batches=2",
        "train.progress=false", "train.sample_tokens=0"]


def test_evaluate_and_finetune_lm(tmp_path, tiny_corpus, capsys):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    assert main(["pretrain", "--data", str(tiny_corpus), "--out", str(tmp_path / "base"), cache, *TINY]) == 0
    run = load_run(tmp_path / "base")
    before = evaluate_lm(run, str(tiny_corpus))
    assert before["tokens"] == len(run.tokenizer.encode(tiny_corpus.read_text()))
    assert math.isclose(before["ppl"], math.exp(before["loss"]), rel_tol=1e-6)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "base"), "--data", str(tiny_corpus)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["finetune", "lm", "--base", str(tmp_path / "base"), "--data", str(tiny_corpus),
                 "--out", str(tmp_path / "ft"), cache, "train.max_steps=30", "train.progress=false",
                 "train.eval_every=30", "train.eval_batches=2", "train.sample_tokens=0"]) == 0
    after = evaluate_lm(load_run(tmp_path / "ft"), str(tiny_corpus))
    assert after["loss"] < before["loss"]  # it started from the base weights and kept learning
