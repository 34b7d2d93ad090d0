"""`lmforge tokenizer train|encode|decode|info`, called through `cli(argv)`."""

from __future__ import annotations

from lmforge.tokenizers import load_tokenizer
from lmforge.tokenizers.cli import cli


def test_train_encode_decode(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be: that is the question.\n" * 20, encoding="utf-8")
    out = tmp_path / "tok.json"
    assert cli(["train", "--kind", "bpe", "--vocab-size", "270", "--data", str(corpus), "--out", str(out)]) == 0
    assert "vocab_size 270" in capsys.readouterr().out
    tok = load_tokenizer(out)
    assert tok.kind == "bpe"

    assert cli(["encode", str(out), "to be or not"]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    assert ids == tok.encode("to be or not")

    assert cli(["decode", str(out), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "to be or not\n"

    assert cli(["encode", "--tokens", str(out), "be"]) == 0
    assert capsys.readouterr().out.strip() == "be"

    assert cli(["info", str(out)]) == 0
    assert "eos 3 <eos>" in capsys.readouterr().out


def test_char_on_jsonl_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"body": "héllo"}\n{"body": "wörld"}\n', encoding="utf-8")
    out = tmp_path / "run"
    assert cli(["train", "--kind", "char", "--data", str(tmp_path / "data"), "--text-field", "body",
                "--out", str(out)]) == 0
    tok = load_tokenizer(out / "tokenizer.json")
    assert tok.vocab_size == 4 + len(set("héllowörld"))


def test_errors_are_one_line(tmp_path, capsys):
    assert cli(["train", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.path") and "nope.txt" in err and err.count("\n") == 1

    corpus = tmp_path / "c.txt"
    corpus.write_text("abc")
    out = tmp_path / "t.json"
    assert cli(["train", "--kind", "char", "--data", str(corpus), "--out", str(out)]) == 0
    assert cli(["decode", str(out), "5", "x"]) == 2
    assert "token id 'x' is not an integer" in capsys.readouterr().err
    assert cli(["decode", str(out), "999"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert cli(["encode", str(tmp_path / "missing.json"), "hi"]) == 2
    assert cli(["train", "--kind", "nope", "--out", "x"]) == 2  # argparse usage error, no traceback
