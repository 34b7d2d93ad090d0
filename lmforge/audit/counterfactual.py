"""`lmforge audit counterfactual`: does the output change when only an identity term does?

Classifier runs: every template line with a `{slot}` is filled with each term of that slot
(lmforge/assets/bias/terms.json, or `--terms`); for each pair of terms (the slot's aligned
`pairs`, or every two of its `terms`) we count the templates whose predicted label differs
(flip rate) and average the change in the positive-class probability, p(b) - p(a).

Language-model runs: `--pairs FILE` holds minimally different sentences (a TSV/CSV with
two text columns, e.g. CrowS-Pairs' sent_more/sent_less, or the first two columns); the
report is log p(a) - log p(b) per pair (natural log, whole sentence), its mean, and how
often the model prefers the first sentence.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import ConfigError
from .bias import positive_label

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "bias"
SLOT = re.compile(r"\{(\w+)\}")


def load_terms(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    path = Path(path) if path else ASSETS / "terms.json"
    if not path.is_file():
        raise ConfigError(f"--terms {path}: no such file")
    try:
        slots = json.loads(path.read_text(encoding="utf-8"))["slots"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: expected {{\"slots\": {{name: {{\"pairs\"|\"terms\": ...}}}}}} "
                          f"({type(err).__name__})") from None
    for name, slot in slots.items():
        if not slot.get("pairs") and not slot.get("terms"):
            raise ConfigError(f"{path}: slot {name!r} has neither 'pairs' nor 'terms'")
    return slots


def load_templates(path: str | Path | None, slots: dict[str, Any]) -> list[str]:
    path = Path(path) if path else ASSETS / "templates.txt"
    if not path.is_file():
        raise ConfigError(f"--templates {path}: no such file")
    templates = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names = set(SLOT.findall(line))
        if len(names) != 1:
            raise ConfigError(f"{path} line {no}: a template needs exactly one kind of slot "
                              f"({{{'}, {'.join(sorted(slots))}}}), found {sorted(names) or 'none'}")
        (name,) = names
        if name not in slots:
            raise ConfigError(f"{path} line {no}: unknown slot {{{name}}}; known: "
                              f"{', '.join(sorted(slots))}")
        templates.append(line)
    if not templates:
        raise ConfigError(f"{path}: no templates")
    return templates


def term_pairs(slot: dict[str, Any]) -> list[tuple[str, str]]:
    if slot.get("pairs"):
        return [tuple(p) for p in slot["pairs"]]
    return list(itertools.combinations(slot["terms"], 2))


def fill(template: str, term: str) -> str:
    """Fill every slot; a term starting a sentence gets a capital letter.

    >>> fill("{pronoun} is here and {pronoun} stays.", "she")
    'She is here and she stays.'
    """
    out = SLOT.sub(term, template)
    return out[:1].upper() + out[1:] if template.startswith("{") else out


def classifier_probe(predict_proba: Callable[[list[str]], np.ndarray], templates: list[str],
                     slots: dict[str, Any], positive: int) -> dict[str, Any]:
    """Flip rate and mean score change per term pair, per slot and overall."""
    texts = sorted({fill(t, term) for t in templates for slot in SLOT.findall(t)[:1]
                    for term in _terms(slots[slot])})
    probs = predict_proba(texts)
    label = dict(zip(texts, probs.argmax(1)))
    score = dict(zip(texts, probs[:, positive]))
    pairs_out, per_slot, flips_all = [], {}, []
    for name, slot in slots.items():
        used = [t for t in templates if SLOT.findall(t)[0] == name]
        if not used:
            continue
        slot_flips = []
        for a, b in term_pairs(slot):
            flips = [label[fill(t, a)] != label[fill(t, b)] for t in used]
            delta = [float(score[fill(t, b)] - score[fill(t, a)]) for t in used]
            pairs_out.append({"slot": name, "a": a, "b": b, "templates": len(used),
                              "flip_rate": float(np.mean(flips)), "mean_score_change": float(np.mean(delta)),
                              "max_abs_score_change": float(np.max(np.abs(delta)))})
            slot_flips += flips
        per_slot[name] = {"templates": len(used), "pairs": len(term_pairs(slot)),
                          "flip_rate": float(np.mean(slot_flips))}
        flips_all += slot_flips
    pairs_out.sort(key=lambda r: (-r["flip_rate"], -abs(r["mean_score_change"])))
    return {"flip_rate": float(np.mean(flips_all)), "comparisons": len(flips_all),
            "by_slot": per_slot, "pairs": pairs_out}


def _terms(slot: dict[str, Any]) -> list[str]:
    return sorted({t for p in term_pairs(slot) for t in p})


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Sentence pairs: a TSV/CSV whose header names sent_more/sent_less (CrowS-Pairs) or
    any two text columns (the first two are used)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--pairs {path}: no such file")
    text = path.read_text(encoding="utf-8")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in text.splitlines()[0] else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    header, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    cols = [header.index(c) for c in ("sent_more", "sent_less")] \
        if {"sent_more", "sent_less"} <= set(header) else [0, 1]
    if len(header) < 2:
        raise ConfigError(f"{path}: needs two sentence columns (a header, then one pair a line)")
    pairs = []
    for no, r in enumerate(body, 2):
        if len(r) < max(cols) + 1:
            raise ConfigError(f"{path} line {no}: expected {len(header)} columns, got {len(r)}")
        pairs.append((r[cols[0]], r[cols[1]]))
    if not pairs:
        raise ConfigError(f"{path}: no pairs")
    return pairs


def lm_probe(score: Callable[[list[str], list[str]], list[float]],
             pairs: list[tuple[str, str]]) -> dict[str, Any]:
    a = np.array(score([""] * len(pairs), [p[0] for p in pairs]))
    b = np.array(score([""] * len(pairs), [p[1] for p in pairs]))
    gap = a - b
    return {"pairs": len(pairs), "mean_logprob_gap": float(gap.mean()),
            "prefers_first": float((gap > 0).mean()),
            "rows": [{"a": x, "b": y, "logprob_a": float(la), "logprob_b": float(lb)}
                     for (x, y), la, lb in zip(pairs, a, b)]}


def audit_counterfactual(run: str | Path, templates: str | None = None, terms: str | None = None,
                         pairs: str | None = None, positive: str | None = None,
                         log: Callable = print) -> dict[str, Any]:
    from ..run import load_run, read_model_config

    head = read_model_config(run).head
    if head == "classifier":
        from ..tasks.classify import TextClassifier

        clf = TextClassifier.load(run)
        slots = load_terms(terms)
        pos = positive_label(list(clf.labels.names), positive)
        report = classifier_probe(clf.predict_proba, load_templates(templates, slots), slots,
                                  clf.labels.names.index(pos))
        report.update(run=str(run), positive=pos)
        log(f"flip rate {report['flip_rate']:.2%} over {report['comparisons']:,} template x pair "
            "comparisons; " + ", ".join(f"{k} {v['flip_rate']:.2%}" for k, v in report["by_slot"].items()))
        for r in report["pairs"][:5]:
            log(f"  {r['slot']}: {r['a']} -> {r['b']}: flips {r['flip_rate']:.0%}, "
                f"p({pos}) {r['mean_score_change']:+.3f}")
        return report
    if head == "causal_lm":
        if not pairs:
            raise ConfigError(f"{run} is a language model: give --pairs FILE (two sentences a line)")
        lm = load_run(run)
        report = lm_probe(lm.score, read_pairs(pairs))
        report["run"] = str(run)
        log(f"{report['pairs']} pairs: mean log p(first) - log p(second) = "
            f"{report['mean_logprob_gap']:+.3f}; the first is preferred in "
            f"{report['prefers_first']:.0%}")
        return report
    raise ConfigError(f"{run}: counterfactual probes need a classifier or causal_lm run, not {head}")


def counterfactual_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lmforge audit counterfactual",
                                description="Prediction flips when only an identity term changes.")
    p.add_argument("run")
    p.add_argument("--templates", help="template file (default: the shipped templates)")
    p.add_argument("--terms", help="terms.json (default: lmforge/assets/bias/terms.json)")
    p.add_argument("--pairs", help="language models: TSV/CSV of minimally different sentences")
    p.add_argument("--positive", help="classifier positive class")
    p.add_argument("--out", help="write the report here as JSON")
    a = p.parse_args(argv)
    report = audit_counterfactual(a.run, a.templates, a.terms, a.pairs, a.positive)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0
