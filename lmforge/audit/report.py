"""`lmforge data audit`: what is in a corpus, in one streaming pass.

    report = audit_corpus("corpus/", "audit/", tokenizer="runs/x")   # -> dict, also audit.json

Counts documents, characters and (with a tokenizer) tokens; the language mix (lingua);
exact and near duplicates (see dedup.py); PII by type with a few examples in which every
finding is replaced by its tag, so the report itself leaks nothing; label balance per
labelled file; length histograms. Writes audit.json, audit.md and plots/*.png into `out`.
"""

from __future__ import annotations

import json
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..train.checkpoint import atomic_write_text
from .dedup import DuplicateIndex
from .language import LanguageDetector
from .pii import TAGS, PIIFinder
from .records import discover

EXAMPLES = 3  # per PII type and per duplicate kind
SNIPPET = 50  # characters of context either side of an example


def snippet(redacted: str, tag: str) -> str:
    """`SNIPPET` characters around the first `tag` of an already redacted text, on one line."""
    i = redacted.find(tag)
    lo, hi = max(0, i - SNIPPET), i + len(tag) + SNIPPET
    head = "…" if lo > 0 else ""
    tail = "…" if hi < len(redacted) else ""
    return head + " ".join(redacted[lo:hi].split()) + tail


def load_counter(tokenizer: str | None) -> Callable[[str], int] | None:
    """Token counter of a run folder or tokenizer.json (None: no token counts)."""
    if not tokenizer:
        return None
    from ..tokenizers import load_tokenizer

    path = Path(tokenizer)
    tok = load_tokenizer(path / "tokenizer.json" if path.is_dir() else path)
    return lambda text: len(tok.encode(text))


def audit_corpus(path: str | Path, out: str | Path, *, tokenizer: str | None = None,
                 unit: str = "paragraph", text_fields: list[str] | None = None,
                 label_field: str = "label", threshold: float = 0.5, shingle: int = 3,
                 window: int = 100_000, terms: list[str] = (), regions: list[str] | None = None,
                 languages: bool = True, plots: bool = True, log: Callable = print) -> dict[str, Any]:
    """Audit a text file, folder, JSONL, TSV/CSV or parallel corpus; returns the report dict."""
    t0 = time.perf_counter()
    sources = discover(path, unit, text_fields, label_field)
    finder = PIIFinder(terms=terms, **({"regions": regions} if regions else {}))
    dups = DuplicateIndex("near", threshold=threshold, shingle=shingle, window=window)
    detect = LanguageDetector() if languages else None
    count_tokens = load_counter(tokenizer)
    chars, tokens = array("L"), array("L")
    langs: dict[str, Counter] = {}
    pii_counts, pii_docs, dup_counts = Counter(), 0, Counter()
    pii_examples: dict[str, list[str]] = {}
    dup_examples: dict[str, list[str]] = {}
    files: list[dict[str, Any]] = []
    where: dict[int, str] = {}  # document id -> "file line N", for duplicate examples
    for source in sources:
        labels, n_docs = Counter(), 0
        for rec in source.records():
            if rec.separator:
                continue
            n_docs += 1
            text = rec.text
            chars.append(len(text))
            if count_tokens is not None:
                tokens.append(sum(count_tokens(v) for v in rec.fields.values()))
            if rec.label is not None:
                labels[rec.label] += 1
            if detect is not None:
                for name, value in rec.fields.items():
                    langs.setdefault(name, Counter())[detect(value)] += 1
            spans = [s for v in rec.fields.values() for s in finder.find(v)]
            if spans:
                pii_docs += 1
                redacted = finder.redact(text)
                for span in spans:
                    pii_counts[span.kind] += 1
                    shown = pii_examples.setdefault(span.kind, [])
                    if len(shown) < EXAMPLES:
                        shown.append(f"{source.name} line {rec.line}: {snippet(redacted, TAGS[span.kind])}")
            here = f"{source.name} line {rec.line}"
            where[dups.count] = here
            where.pop(dups.count - 20 * window, None)  # as far back as the index remembers
            found = dups.check(text)
            if found is not None:
                kind, first = found
                dup_counts[kind] += 1
                shown = dup_examples.setdefault(kind, [])
                if len(shown) < EXAMPLES:
                    shown.append(f"{here} repeats {where.get(first, 'an earlier document')}")
        entry: dict[str, Any] = {"file": source.name, "format": source.kind, "documents": n_docs}
        if labels:
            entry["labels"] = dict(sorted(labels.items()))
            entry["majority_share"] = round(max(labels.values()) / sum(labels.values()), 4)
        files.append(entry)
    n = len(chars)
    report = {
        "path": str(path),
        "documents": n,
        "characters": int(sum(chars)),
        "tokens": int(sum(tokens)) if count_tokens is not None else None,
        "tokenizer": tokenizer,
        "unit": unit,
        "files": files,
        "languages": {k: dict(v.most_common()) for k, v in langs.items()},
        "duplicates": {"exact": dup_counts["exact"], "near": dup_counts["near"],
                       "near_threshold": threshold, "shingle_words": shingle,
                       "window": window, "examples": dup_examples},
        "pii": {"documents_with_pii": pii_docs, "by_type": dict(pii_counts.most_common()),
                "examples": pii_examples},
        "lengths": {"chars": _summary(chars), **({"tokens": _summary(tokens)} if tokens else {})},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "audit.json", json.dumps(report, indent=2, ensure_ascii=False))
    atomic_write_text(out / "audit.md", format_markdown(report))
    if plots:
        from .plots import audit_plots

        report["plots"] = audit_plots(report, chars, tokens, out / "plots")
    log(f"audited {n:,} documents ({report['characters']:,} chars) in {report['seconds']}s -> "
        f"{out / 'audit.md'}")
    return report


def _summary(values: array) -> dict[str, float]:
    if not values:
        return {}
    a = np.frombuffer(values, dtype=np.uint64 if values.itemsize == 8 else np.uint32)
    q = np.percentile(a, [50, 90, 99])
    return {"min": int(a.min()), "mean": round(float(a.mean()), 1), "median": float(q[0]),
            "p90": float(q[1]), "p99": float(q[2]), "max": int(a.max())}


def format_markdown(r: dict[str, Any]) -> str:
    """audit.md: the report for people."""
    lines = [f"# Data audit: {r['path']}", "",
             f"- documents: {r['documents']:,} (unit: {r['unit']} for plain text)",
             f"- characters: {r['characters']:,}"]
    if r["tokens"] is not None:
        lines.append(f"- tokens: {r['tokens']:,} ({r['tokenizer']})")
    d = r["duplicates"]
    share = lambda k: f"{k / max(r['documents'], 1):.2%}"  # noqa: E731
    lines += [f"- exact duplicates: {d['exact']:,} ({share(d['exact'])})",
              f"- near duplicates: {d['near']:,} ({share(d['near'])}; MinHash Jaccard >= "
              f"{d['near_threshold']} on {d['shingle_words']}-word shingles, window "
              f"{d['window']:,} documents)",
              f"- documents with PII: {r['pii']['documents_with_pii']:,}", "", "## Files", "",
              "| file | format | documents | labels |", "| --- | --- | ---: | --- |"]
    for f in r["files"]:
        labels = ", ".join(f"{k}: {v:,}" for k, v in f.get("labels", {}).items())
        lines.append(f"| {f['file']} | {f['format']} | {f['documents']:,} | {labels} |")
    lines += ["", "## Languages", ""]
    for field, counts in r["languages"].items():
        total = sum(counts.values()) or 1
        top = ", ".join(f"{k} {v / total:.1%}" for k, v in list(counts.items())[:8])
        lines.append(f"- {field}: {top}")
    lines += ["", "## PII by type", "", "| type | found | examples (redacted) |",
              "| --- | ---: | --- |"]
    for kind, count in r["pii"]["by_type"].items():
        shown = "<br>".join(e.replace("|", "\\|") for e in r["pii"]["examples"].get(kind, []))
        lines.append(f"| {kind} | {count:,} | {shown} |")
    lines += ["", "## Duplicates (examples)", ""]
    for kind, shown in d["examples"].items():
        lines += [f"- {kind}: {e}" for e in shown]
    lines += ["", "## Lengths", "", "| | min | mean | median | p90 | p99 | max |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in r["lengths"].items():
        if s:
            lines.append(f"| {name} | {s['min']} | {s['mean']} | {s['median']:g} | {s['p90']:g} | "
                         f"{s['p99']:g} | {s['max']} |")
    return "\n".join(lines) + "\n"
