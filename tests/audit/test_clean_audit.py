"""`lmforge data audit|clean` on every format: round trips, filters, refusals, interruption."""

from __future__ import annotations

import json

import pytest

from lmforge.audit.clean import clean_corpus
from lmforge.audit.report import audit_corpus
from lmforge.cli import main

EMAIL = "ann.lee@example.org"


@pytest.fixture
def corpus(tmp_path):
    """A folder with one file of each format, some PII and some duplicates."""
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "notes.txt").write_text(
        "First note, nothing private here at all.\n\n"
        f"Reach me at {EMAIL} or 4111 1111 1111 1111 please.\n\n\n"
        "First note, nothing private here at all.\n", encoding="utf-8")
    (root / "reviews.tsv").write_text(
        "sentence\tlabel\n"
        "a warm and \"funny\" film about two old friends on a road trip\t1\n"
        "call me at +44 20 7946 0958 about this dull film\t0\n"
        "a warm and funny film about two old friends on a long road trip\t1\n", encoding="utf-8")
    (root / "chat.jsonl").write_text(
        json.dumps({"id": 7, "text": f"my mail is {EMAIL}", "label": "x"}) + "\n"
        + json.dumps({"id": 8, "text": "nothing to see", "label": "y"}) + "\n", encoding="utf-8")
    (root / "train.de").write_text("Ein kleiner brauner Hund läuft über die grüne Wiese.\nZwei Kinder spielen zusammen im Park.\n", encoding="utf-8")
    (root / "train.en").write_text("A small brown dog runs across the green meadow.\nTwo children are playing together in the park.\n", encoding="utf-8")
    return root


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_keep_everything_is_byte_identical(corpus, tmp_path):
    out = tmp_path / "same"
    report = clean_corpus(corpus, out, pii="keep", dedup="none", log=lambda *a: None)
    assert report["documents_in"] == report["documents_out"] == 3 + 3 + 2 + 2
    copied = snapshot(out)
    copied.pop(type(next(iter(copied)))("clean_report.json"))
    assert copied == snapshot(corpus)


def test_redact_and_deduplicate(corpus, tmp_path):
    out = tmp_path / "clean"
    report = clean_corpus(corpus, out, pii="redact", dedup="near", log=lambda *a: None)
    notes = (out / "notes.txt").read_text()
    assert EMAIL not in notes and "Reach me at [EMAIL] or [CARD] please." in notes
    assert notes.count("First note") == 1
    rows = (out / "reviews.tsv").read_text().splitlines()
    assert rows == ["sentence\tlabel",
                    "a warm and \"funny\" film about two old friends on a road trip\t1",
                    "call me at [PHONE] about this dull film\t0"]  # the near copy is gone
    lines = [json.loads(x) for x in (out / "chat.jsonl").read_text().splitlines()]
    assert lines[0] == {"id": 7, "text": "my mail is [EMAIL]", "label": "x"}
    assert (out / "train.de").read_text().count("\n") == 2  # the pair survives, aligned
    assert report["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1}
    assert report["redacted"] == {"email": 2, "card": 1, "phone": 1}


def test_drop_pii_documents(corpus, tmp_path):
    out = tmp_path / "clean"
    report = clean_corpus(corpus, out, pii="drop", dedup="none", log=lambda *a: None)
    assert report["dropped"] == {"pii": 3}
    assert "0958" not in (out / "reviews.tsv").read_text()


def test_language_filter_on_parallel_and_text(corpus, tmp_path):
    report = clean_corpus(corpus / "train.de", tmp_path / "de", pii="keep", dedup="none",
                          languages=["en"], unit="line", log=lambda *a: None)
    assert report["documents_out"] == 0 and report["dropped"] == {"language": 2}


@pytest.mark.parametrize("where", ["same", "inside", "exists"])
def test_refuses_to_write_over_its_input(corpus, tmp_path, where, capsys):
    before = snapshot(corpus)
    out = {"same": corpus, "inside": corpus / "sub", "exists": tmp_path}[where]
    assert main(["data", "clean", str(corpus), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: --out") and "\n" not in err
    assert snapshot(corpus) == before


def test_interrupted_clean_leaves_no_output(corpus, tmp_path):
    out = tmp_path / "clean"

    def stop_at(n):
        if n == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        clean_corpus(corpus, out, on_record=stop_at, log=lambda *a: None)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]  # no temp folder left behind


def test_non_utf8_names_the_byte_offset(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\nsecond \xff line\n")
    assert main(["data", "clean", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"lmforge: error: {bad}: not valid UTF-8 at byte offset 18 (line 3)"
    assert not (tmp_path / "o").exists()


def test_audit_report(corpus, tmp_path):
    out = tmp_path / "audit"
    r = audit_corpus(corpus, out, log=lambda *a: None)
    assert r["documents"] == 10
    assert r["pii"]["by_type"] == {"email": 2, "card": 1, "phone": 1}
    assert r["duplicates"]["exact"] == 1 and r["duplicates"]["near"] == 1
    tsv = next(f for f in r["files"] if f["file"] == "reviews.tsv")
    assert tsv["labels"] == {"0": 1, "1": 2}
    assert r["languages"]["de"]["de"] == 2 and r["languages"]["en"]["en"] == 2
    text = (out / "audit.md").read_text() + (out / "audit.json").read_text()
    assert EMAIL not in text and "0958" not in text and "[EMAIL]" in text  # examples are redacted
    assert {"lengths_chars.png", "pii.png", "labels.png"} <= {p.name for p in (out / "plots").iterdir()}


def test_audit_counts_tokens(tmp_path, tiny_corpus):
    from lmforge.tokenizers import train_tokenizer

    tok = train_tokenizer("char", [tiny_corpus.read_text()])
    tok.save(tmp_path / "tokenizer.json")
    r = audit_corpus(tiny_corpus, tmp_path / "a", tokenizer=str(tmp_path / "tokenizer.json"),
                     unit="line", languages=False, plots=False, log=lambda *a: None)
    assert r["documents"] == 600 and r["duplicates"]["exact"] == 594
    assert r["tokens"] == sum(len(line) for line in tiny_corpus.read_text().splitlines())


def test_command_groups(capsys):
    assert main(["data", "--help"]) == 0 and "clean" in capsys.readouterr().out
    assert main(["audit", "--help"]) == 0 and "memorization" in capsys.readouterr().out
    assert main(["audit", "memorise"]) == 1
    assert "unknown `lmforge audit` command 'memorise'" in capsys.readouterr().err


def test_audit_command_writes_its_files(corpus, tmp_path):
    out = tmp_path / "a"
    assert main(["data", "audit", str(corpus), "--out", str(out), "--no-languages"]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["documents"] == 10 and report["languages"] == {}
    assert (out / "audit.md").read_text().startswith(f"# Data audit: {corpus}")
