"""Per-group metrics (fairlearn) and counterfactual probes, against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.audit.bias import group_metrics
from lmforge.audit.counterfactual import (classifier_probe, fill, lm_probe, load_templates,
                                          load_terms, read_pairs)
from lmforge.cli import main
from lmforge.config import ConfigError


def test_group_metrics_by_hand():
    y_true = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 1])
    y_pred = np.array([1, 0, 0, 1, 1, 1, 1, 1, 0, 1])
    groups = ["a"] * 4 + ["b"] * 6
    with pytest.warns(UserWarning, match="group 'a' has only 4 examples"):
        r = group_metrics(y_true, y_pred, groups, positive=1, min_count=5)
    a, b = r["by_group"]["a"], r["by_group"]["b"]
    assert a["count"] == 4 and a["accuracy"] == 0.5 and b["accuracy"] == 4 / 6
    assert a["positive_rate"] == 0.5 and b["positive_rate"] == 5 / 6
    assert a["fpr"] == 0.5 and b["fpr"] == 2 / 3      # negatives predicted positive
    assert a["fnr"] == 0.5 and b["fnr"] == 0.0        # positives predicted negative
    assert a["f1"] == pytest.approx(0.5) and b["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2))
    assert r["difference"]["accuracy"] == pytest.approx(4 / 6 - 0.5)
    assert r["difference"]["fnr"] == 0.5 and r["small_groups"] == ["a"]
    assert r["overall"]["accuracy"] == 0.6


def test_flip_rate_and_score_change_by_hand():
    slots = {"pronoun": {"pairs": [["he", "she"]]}, "nat": {"terms": ["A", "B", "C"]}}
    templates = ["{pronoun} liked it.", "{pronoun} hated it.", "The {nat} film."]

    def predict(texts):  # positive iff "She" or nationality B; probability 0.9 / 0.2
        pos = np.array([("She" in t or " B " in t) for t in texts], dtype=float)
        p = 0.2 + 0.7 * pos
        return np.stack([1 - p, p], axis=1)

    r = classifier_probe(predict, templates, slots, positive=1)
    by = {(x["a"], x["b"]): x for x in r["pairs"]}
    assert by[("he", "she")]["flip_rate"] == 1.0
    assert by[("he", "she")]["mean_score_change"] == pytest.approx(0.7)
    assert by[("A", "B")]["flip_rate"] == 1.0 and by[("A", "C")]["flip_rate"] == 0.0
    assert by[("B", "C")]["mean_score_change"] == pytest.approx(-0.7)
    assert r["comparisons"] == 2 + 3 and r["flip_rate"] == pytest.approx(4 / 5)
    assert fill("{pronoun} said {pronoun} would.", "she") == "She said she would."


def test_shipped_terms_and_templates_load():
    slots = load_terms()
    templates = load_templates(None, slots)
    assert len(templates) >= 20 and all(s.get("source") for s in slots.values())
    used = {t.split("{")[1].split("}")[0] for t in templates}
    assert used == set(slots)


def test_bad_template_is_named(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("fine {name}.\n{name} and {person}.\n")
    with pytest.raises(ConfigError, match="line 2: a template needs exactly one kind of slot"):
        load_templates(path, load_terms())


def test_lm_pairs(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("id,sent_more,sent_less\n1,he is a nurse,she is a nurse\n2,x y,x z\n")
    pairs = read_pairs(path)
    assert pairs == [("he is a nurse", "she is a nurse"), ("x y", "x z")]
    r = lm_probe(lambda prompts, conts: [-float(len(c)) for c in conts], pairs)
    assert r["mean_logprob_gap"] == pytest.approx((1 + 0) / 2) and r["prefers_first"] == 0.5


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    from lmforge.tasks.classify import finetune
    from tests.tasks.test_classify import TINY, toy_rows, write_split

    root = tmp_path_factory.mktemp("clf")
    data = root / "toy"
    data.mkdir()
    write_split(data / "train.tsv", toy_rows(160, 0))
    write_split(data / "dev.tsv", toy_rows(20, 1))
    return finetune(data, config=TINY, out=root / "run", epochs=3, log=lambda *a, **k: None)


def test_bias_and_counterfactual_commands_on_a_run(classifier_run, tmp_path, capsys):
    from tests.tasks.test_classify import toy_rows

    rows = toy_rows(60, 5)
    data = tmp_path / "grouped.tsv"
    data.write_text("sentence\tlabel\tgroup\n" + "".join(
        f"{t}\t{y}\t{'g1' if i % 3 else 'g2'}\n" for i, (t, y) in enumerate(rows)))
    out = tmp_path / "bias.json"
    assert main(["audit", "bias", str(classifier_run), "--data", str(data), "--group-field",
                 "group", "--min-count", "25", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "lmforge: warning: group 'g2' has only 20 examples" in shown
    r = json.loads(out.read_text())
    assert r["by_group"]["g1"]["count"] == 40 and r["positive"] == "pos"

    assert main(["audit", "bias", str(classifier_run), "--data", str(data),
                 "--group-field", "gender"]) == 1
    err = capsys.readouterr().err
    assert "no group column 'gender'; columns found: 'sentence', 'label', 'group'" in err

    cf = tmp_path / "cf.json"
    assert main(["audit", "counterfactual", str(classifier_run), "--out", str(cf)]) == 0
    r = json.loads(cf.read_text())
    assert 0 <= r["flip_rate"] <= 1 and set(r["by_slot"]) == {"name", "person", "pronoun", "nationality"}
