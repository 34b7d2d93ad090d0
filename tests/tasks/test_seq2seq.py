"""The seq2seq task end to end: finetune through the Trainer, decode, evaluate, resume, CLI errors."""

import json
import random
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.config import ConfigError, load_config
from lmforge.tasks.seq2seq import (Seq2SeqRun, TaskOptions, evaluate, finetune, load_seq2seq, score,
                                   translate)

ROOT = Path(__file__).resolve().parents[2]
WORDS = "red green blue cat dog bird sun moon tree house".split()

TINY = ["model.arch=transformer", "model.d_model=64", "model.n_layers=1", "model.n_heads=4",
        "model.d_ff=128", "model.max_len=16", "model.dropout=0", "model.extra.label_smoothing=0",
        "tokenizer.kind=word", "tokenizer.vocab_size=100", "train.batch_size=32", "train.lr=3e-3",
        "train.min_lr=1e-4", "train.warmup_steps=20", "train.progress=false", "train.threads=1",
        "train.eval_every=100"]


def make_pairs(folder: Path, sizes=(("train", 2000), ("val", 60), ("test", 40)), seed=0) -> Path:
    """Sentences of 2-6 words; the 'translation' is the same words upper-cased."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        src = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]
        (folder / f"{split}.xx").write_text("\n".join(src) + "\n")
        (folder / f"{split}.yy").write_text("\n".join(s.upper() for s in src) + "\n")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("mt")
    data = make_pairs(base / "data")
    run = finetune(task="translate", data=data, src="xx", tgt="yy", out=base / "run",
                   overrides=TINY + ["train.max_steps=400", "task.eval_decode=40"], log=lambda *a: None)
    return data, run


def test_finetune_writes_a_complete_run(trained):
    _, run = trained
    for name in ("config.yaml", "model_config.json", "tokenizer.json", "model.safetensors",
                 "best.safetensors", "trainer_state.pt", "metrics.csv"):
        assert (run / name).is_file(), name
    cfg = load_config(run / "config.yaml")
    assert cfg.task["kind"] == "translate" and cfg.task["src"] == "xx"
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "bleu" in header and "ppl" in header


def test_learned_copy_scores_100_through_evaluate(trained, tmp_path):
    data, run = trained
    result = evaluate(run, data, "test", beams=3, out_dir=tmp_path, log=lambda *a: None)
    assert result["bleu"] == pytest.approx(100.0) and result["chrf"] == pytest.approx(100.0)
    rows = [json.loads(line) for line in (tmp_path / f"{data.name}-test.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and rows[0]["hypothesis"] == rows[0]["references"][0]
    assert json.loads((tmp_path / f"{data.name}-test.scores.json").read_text())["examples"] == 40


def test_generate_and_translate(trained):
    _, run = trained
    loaded = load_seq2seq(run, device="cpu")
    assert isinstance(loaded, Seq2SeqRun)
    assert loaded.generate("red cat dog", beams=4) == "RED CAT DOG"
    assert translate(loaded, ["sun moon", "tree"], beams=1) == ["SUN MOON", "TREE"]


def test_evaluate_cli_prints_scores(trained, capsys, tmp_path):
    data, run = trained
    assert main(["evaluate", str(run), "--data", str(data), "--split", "test", "--limit", "10",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "BLEU 100.00" in out and "chrF 100.00" in out


def test_scores_match_the_reference_libraries():
    import sacrebleu
    from rouge_score import rouge_scorer

    hyps = ["the cat sat on the mat", "a dog runs in the park today"]
    refs = [["the cat is on the mat"], ["a dog is running in the park", "the dog runs in a park"]]
    got = score("translate", hyps, refs)
    streams = [[r[0] for r in refs], [None, refs[1][1]]]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    r = score("summarize", hyps, refs)
    expected = sum(max(scorer.score(t, h)["rouge2"].fmeasure for t in rs) for h, rs in zip(hyps, refs)) / 2
    assert r["rouge2"] == pytest.approx(100 * expected)
    identical = score("summarize", hyps, [[h] for h in hyps])
    assert identical == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert score("translate", hyps, [[h] for h in hyps])["bleu"] == pytest.approx(100.0)


def test_resume_continues_exactly(tmp_path):
    data = make_pairs(tmp_path / "data", (("train", 300), ("val", 20)))
    common = TINY + ["train.schedule=constant", "train.warmup_steps=5", "train.eval_every=10"]
    quiet = dict(log=lambda *a: None, task="translate", data=data, src="xx", tgt="yy")
    straight = finetune(out=tmp_path / "a", overrides=common + ["train.max_steps=20"], **quiet)
    finetune(out=tmp_path / "b", overrides=common + ["train.max_steps=10"], **quiet)
    resumed = finetune(out=tmp_path / "b", overrides=["train.max_steps=20"], resume=True, **quiet)
    a = load_seq2seq(straight, weights="last", device="cpu").model.state_dict()
    b = load_seq2seq(resumed, weights="last", device="cpu").model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_summarize_with_copy_and_references(tmp_path):
    # the summary is the source's first three words: a pointer-generator learns to copy them
    rng = random.Random(1)
    folder = tmp_path / "sum"
    folder.mkdir()
    for split, n in (("train", 600), ("val", 30)):
        rows = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 9))]
            rows.append({"source": " ".join(words), "target": " ".join(words[:3]),
                         "references": [" ".join(words[:3]), " ".join(words[:2])]})
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run = finetune(task="summarize", data=folder, out=tmp_path / "run", log=lambda *a: None,
                   overrides=[o for o in TINY if not o.startswith("model.arch")] + [
                       "model.arch=lstm", "model.bidirectional=true", "model.extra.copy=true",
                       "train.lr=1e-2", "train.max_steps=150", "task.max_len_a=0", "task.max_len_b=5",
                       "task.no_repeat_ngram=0"])
    result = evaluate(run, folder, "val", beams=2, out_dir=tmp_path / "eval", log=lambda *a: None)
    assert result["rouge1"] > 90 and result["rougeL"] > 90  # max over the two references
    assert "rouge1_first_ref" in result


def test_every_seq2seq_recipe_loads_and_builds():
    from lmforge.models.build import build_model
    from lmforge.tasks.extractive import ExtractiveOptions, build_extractive

    configs = ROOT / "configs"
    recipes = sorted(configs.glob("translate-*.yaml")) + sorted(configs.glob("summarize-*.yaml"))
    assert len(recipes) >= 4
    for path in recipes:
        cfg = load_config(path)
        cfg.model.vocab_size = 50
        if cfg.model.head == "extractive":
            ExtractiveOptions.from_config(cfg)
            model = build_extractive(cfg.model)
        else:
            assert cfg.model.head == "seq2seq"
            TaskOptions.from_config(cfg)
            model = build_model(cfg.model)
        assert sum(p.numel() for p in model.parameters()) > 0, path.name


def test_bad_input_gives_one_line_errors(tmp_path, capsys):
    data = tmp_path / "bad"
    data.mkdir()
    (data / "train.de").write_text("a\nb\nc\n")
    (data / "train.en").write_text("a\nb\n")
    code = main(["finetune", "seq2seq", "--task", "translate", "--data", str(data), "--src", "de",
                 "--tgt", "en", "--out", str(tmp_path / "run")] + TINY)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "train.de has 3 lines but" in err and "train.en has 2" in err
    with pytest.raises(ConfigError, match="unknown key 'task.beam'"):
        finetune(data=data, out=tmp_path / "r2", overrides=["task.beam=3"])
    with pytest.raises(ConfigError, match="task.kind='translation'"):
        finetune(task="translation", data=data, out=tmp_path / "r3")


def test_missing_tokenizer_is_named(trained, tmp_path):
    import shutil

    _, run = trained
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="target tokenizer tokenizer.json is missing"):
        load_seq2seq(broken)


# --------------------------------------------------------------------------- extractive


def test_split_sentences_and_lead():
    from lmforge.tasks.extractive import lead, split_sentences

    text = "Deep nets are big. We propose a small one (see Fig. 2). It works! 3 tests pass."
    assert split_sentences(text) == ["Deep nets are big.", "We propose a small one (see Fig. 2).",
                                     "It works!", "3 tests pass."]
    assert lead([text], k=2) == ["Deep nets are big. We propose a small one (see Fig. 2)."]


def test_extractive_learns_the_key_sentence(tmp_path):
    # the summary is the one sentence starting "We propose", at a random position: Lead-1 often
    # misses it, the sentence scorer learns to find it
    from lmforge.eval.metrics import rouge
    from lmforge.tasks.extractive import evaluate as ext_evaluate
    from lmforge.tasks.extractive import lead, load_extractive

    rng = random.Random(2)
    folder = tmp_path / "ext"
    folder.mkdir()

    def filler():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6))).capitalize() + "."

    for split, n in (("train", 300), ("val", 40)):
        rows = []
        for _ in range(n):
            sentences = [filler() for _ in range(rng.randint(3, 5))]
            key = "We propose " + " ".join(rng.choice(WORDS) for _ in range(4)) + "."
            sentences.insert(rng.randint(0, len(sentences)), key)
            rows.append({"source": " ".join(sentences), "target": key})
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run = finetune(task="summarize", data=folder, config=ROOT / "configs/summarize-extractive.yaml",
                   out=tmp_path / "run", log=lambda *a: None,
                   overrides=["model.d_model=32", "model.d_embed=32", "tokenizer.kind=word",
                              "tokenizer.vocab_size=100", "train.max_steps=60", "train.eval_every=30",
                              "train.progress=false", "train.threads=1", "train.warmup_steps=5"])
    result = ext_evaluate(run, folder, "val", out_dir=tmp_path / "eval")
    val = [json.loads(line) for line in (folder / "val.jsonl").read_text().splitlines()]
    lead1 = rouge(lead([r["source"] for r in val]), [[r["target"]] for r in val])
    assert result["rouge2"] == pytest.approx(100.0) and lead1["rouge2"] < 60
    assert load_extractive(run).summarize(val[0]["source"]) == val[0]["target"]


def test_decoder_init_from_a_gpt_run(tmp_path):
    # a GPT "run" made by hand: model_config.json, tokenizer.json, model.safetensors
    from lmforge.config import ModelConfig
    from lmforge.models.build import build_model
    from lmforge.tokenizers import train_tokenizer
    from lmforge.train.checkpoint import save_weights

    data = make_pairs(tmp_path / "data", (("train", 200), ("val", 10)))
    tok = train_tokenizer("word", [" ".join(WORDS), " ".join(WORDS).upper()], vocab_size=100)
    gpt_cfg = ModelConfig(arch="gpt", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                          max_len=16)
    gpt = build_model(gpt_cfg)
    gpt_dir = tmp_path / "gpt"
    gpt_dir.mkdir()
    (gpt_dir / "model_config.json").write_text(gpt_cfg.to_json())
    tok.save(gpt_dir / "tokenizer.json")
    save_weights(gpt, gpt_dir / "model.safetensors")
    run = finetune(task="translate", data=data, src="xx", tgt="yy", out=tmp_path / "run",
                   decoder_init=gpt_dir, log=lambda *a: None,
                   overrides=TINY + ["train.max_steps=1", "train.lr=1e-9", "train.warmup_steps=1"])
    model = load_seq2seq(run, weights="last", device="cpu").model
    assert model.config.d_model == 32 and len(model.blocks) == 2
    torch.testing.assert_close(model.blocks[1].mlp.fc.weight, gpt.backbone.blocks[1].mlp.fc.weight,
                               atol=1e-6, rtol=1e-4)


def test_separate_vocabularies(tmp_path):
    data = make_pairs(tmp_path / "data", (("train", 100), ("val", 10)))
    run = finetune(task="translate", data=data, src="xx", tgt="yy", out=tmp_path / "run",
                   log=lambda *a: None, overrides=TINY + ["task.joint_vocab=false", "train.max_steps=2"])
    assert (run / "source_tokenizer.json").is_file()
    loaded = load_seq2seq(run, device="cpu")
    assert loaded.src_tokenizer is not loaded.tokenizer
    assert loaded.model.src_embed is not loaded.model.tgt_embed
    assert isinstance(loaded.generate("red cat", beams=2), str)
    (run / "source_tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="source tokenizer source_tokenizer.json is missing"):
        load_seq2seq(run)


def test_extractive_encoder_from_a_pretrained_run(tmp_path):
    from lmforge.config import ModelConfig
    from lmforge.models.build import build_model
    from lmforge.tasks.extractive import load_extractive
    from lmforge.tokenizers import train_tokenizer
    from lmforge.train.checkpoint import save_weights

    folder = tmp_path / "docs"
    folder.mkdir()
    rows = [{"source": "Cats sleep. We propose dogs. Birds fly.", "target": "We propose dogs."}] * 20
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tok = train_tokenizer("word", [r["source"] for r in rows], vocab_size=50)
    base_cfg = ModelConfig(arch="gru", d_model=16, n_layers=1, vocab_size=tok.vocab_size, max_len=32)
    base = build_model(base_cfg)  # a causal LM over a GRU: weights under backbone.*
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    (base_dir / "model_config.json").write_text(base_cfg.to_json())
    tok.save(base_dir / "tokenizer.json")
    save_weights(base, base_dir / "model.safetensors")
    run = finetune(task="summarize", data=folder, config=ROOT / "configs/summarize-extractive.yaml",
                   out=tmp_path / "run", log=lambda *a: None,
                   overrides=[f"task.base={base_dir}", "train.max_steps=1", "train.lr=1e-9",
                              "train.warmup_steps=1", "train.progress=false", "train.threads=1"])
    model = load_extractive(run, device="cpu").model
    assert model.config.arch == "gru" and model.config.d_model == 16
    torch.testing.assert_close(model.backbone.embed.weight, base.backbone.embed.weight, atol=1e-6, rtol=1e-4)
