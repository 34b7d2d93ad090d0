"""/v1/classify on a classifier run: label names and probabilities as TextClassifier gives."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from lmforge.serve.app import create_app
from lmforge.tasks.classify import TextClassifier, finetune

ROWS = [("the film was good", "pos"), ("a great story", "pos"), ("it was bad", "neg"),
        ("a dull plot", "neg")] * 10
TINY = {"model": {"arch": "lstm", "d_model": 16, "d_embed": 8, "pooling": "max", "max_len": 16},
        "tokenizer": {"kind": "word", "vocab_size": 50},
        "train": {"batch_size": 8, "progress": False, "patience": 0, "threads": 1}}


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cls")
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in ROWS), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:  # the trainer's PNG curves cost seconds; not needed
        mp.setattr("lmforge.train.loop.plot_metrics", lambda run_dir: None)
        return finetune(folder, config=TINY, out=folder / "run", epochs=1, log=lambda *a, **k: None)


def test_classify_returns_label_names(classifier_run):
    texts = ["a good film", "a dull story"]
    with TestClient(create_app(classifier_run, "cpu")) as client:
        res = client.post("/v1/classify", json={"input": texts})
        assert res.status_code == 200, res.text
        data = res.json()
        assert sorted(data["labels"]) == ["neg", "pos"]
        assert data["predictions"] == TextClassifier.load(classifier_run, device="cpu").predict(texts)
        assert client.post("/v1/classify", json={"input": []}).json()["error"]["param"] == "input"
        err = client.post("/v1/completions", json={"prompt": "a"}).json()["error"]
        assert "classify" in err["message"]
        assert 'data-kind="classifier"' in client.get("/").text
