"""Canaries: planting, exposure (exact and sampled ranks), greedy completion, extraction."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from lmforge.audit.memorization import exposure, extraction, plant_canaries
from lmforge.cli import main


class FakeRun:
    """A 'model' whose log-probability of a candidate secret is a fixed pseudo-random number,
    except for `favourite`, which it prefers: ranks are then known exactly."""

    def __init__(self, favourite: str | None = None, texts: list[str] = ()):
        self.favourite, self.texts = favourite, list(texts)

    def _lp(self, cand: str) -> float:
        if cand == self.favourite:
            return 0.0
        return -1 - int(hashlib.sha256(cand.encode()).hexdigest()[:8], 16) / 2**32

    def score(self, prompt, cont):
        return self._lp(cont) if isinstance(cont, str) else [self._lp(c) for c in cont]

    def generate(self, prompt, seed=0, **kw):
        return self.texts[seed % len(self.texts)]


def test_exposure_of_a_memorized_and_of_a_random_secret():
    top = exposure(FakeRun(favourite="0427"), "pin ", "0427")
    assert top["rank"] == 1 and top["exposure"] == pytest.approx(math.log2(10_000))
    # an unremarkable secret: its exact rank among all 10,000 candidates, computed by hand
    run = FakeRun()
    lps = {str(i).zfill(4): run._lp(str(i).zfill(4)) for i in range(10_000)}
    rank = 1 + sum(lp > lps["5031"] for lp in lps.values())
    exact = exposure(run, "pin ", "5031")
    assert exact["rank"] == rank and exact["exposure"] == pytest.approx(math.log2(10_000 / rank))
    sampled = exposure(run, "pin ", "5031", max_candidates=2_000)  # the sampling estimate
    assert not sampled["exact_rank"] and abs(sampled["exposure"] - exact["exposure"]) < 0.3


def test_extraction_counts_verbatim_windows(tmp_path):
    corpus = tmp_path / "c.txt"
    line = "It is a truth universally acknowledged, that a single man in possession of a fortune"
    corpus.write_text("Some preface text.\n" + line + "\nmore text follows here\n")
    fresh = "zq " * 40
    r = extraction(FakeRun(texts=[line[5:75], fresh]), [corpus], samples=2, chars=70, ngram=50)
    assert r["samples_with_memorized_text"] == 1
    assert r["memorized_windows"] == 21  # every 50-char window of the 70 copied characters
    with pytest.raises(Exception, match="at least 50"):
        extraction(FakeRun(texts=[fresh]), [corpus], ngram=20)


def test_plant_canaries(tiny_corpus, tmp_path):
    before = tiny_corpus.read_bytes()
    out = tmp_path / "planted"
    plant_canaries(tiny_corpus, out, count=4, repeats=3, digits=5, seed=1, log=lambda *a: None)
    meta = json.loads((out / "canaries.json").read_text())
    text = (out / tiny_corpus.name).read_text()
    assert len(meta["canaries"]) == 4 and len({c["prefix"] for c in meta["canaries"]}) == 4
    for c in meta["canaries"]:
        assert len(c["secret"]) == 5 and text.count(c["prefix"] + c["secret"] + "\n") == 3
    assert len(text.splitlines()) == 600 + 12
    assert tiny_corpus.read_bytes() == before


def test_more_canaries_than_documents_is_refused(tiny_corpus, tmp_path, capsys):
    assert main(["audit", "canaries", str(tiny_corpus), "--out", str(tmp_path / "o"),
                 "--count", "301", "--repeats", "2"]) == 1
    err = capsys.readouterr().err
    assert "301 canaries x 2 repeats = 602 insertions" in err and "only 600 documents" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # trains a tiny GPT for 120 steps (~10 s on 2 busy cores)
def test_a_repeated_canary_is_memorized_and_a_control_is_not(tiny_corpus, tmp_path):
    from lmforge.audit.memorization import audit_memorization

    out = tmp_path / "planted"
    plant_canaries(tiny_corpus, out, count=1, repeats=200, digits=3, seed=2, log=lambda *a: None)
    assert main(["pretrain", "--data", str(out), "--out", str(tmp_path / "run"),
                 f"data.cache_dir={tmp_path / 'cache'}", "model.d_model=48", "model.n_layers=2",
                 "model.n_heads=2", "model.max_len=48", "train.batch_size=16", "train.max_steps=120",
                 "train.eval_every=0", "train.progress=false", "train.sample_tokens=0"]) == 0
    meta = json.loads((out / "canaries.json").read_text())
    control = tmp_path / "control.json"
    prefix = meta["canaries"][0]["prefix"].replace("account", "acount")
    control.write_text(json.dumps({"canaries": [{"prefix": prefix, "secret": "417"}]}))
    r = audit_memorization(tmp_path / "run", out / "canaries.json", samples=2, log=lambda *a: None)
    assert r["canaries"][0]["exposure"] > 8 and r["greedy_completed"] == 1
    r = audit_memorization(tmp_path / "run", control, samples=1, log=lambda *a: None)
    assert r["canaries"][0]["exposure"] < 5
