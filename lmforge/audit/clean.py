"""`lmforge data clean`: redact or drop PII, remove duplicates, keep chosen languages.

    report = clean_corpus("corpus/", "clean/", pii="redact", dedup="near", languages=["en"])

One streaming pass, record by record, writing the same layout and formats under `out`
(text, JSONL, TSV/CSV, parallel pairs; fields other than the text are copied as they are).
Memory is bounded by the duplicate index's `window` (documents), never by the corpus.

Safety: the input is never written. `out` must not exist yet and must not be the input or
lie inside it. Everything is written into a temporary sibling folder that is renamed to
`out` only when the pass has finished, so an interrupted or failed run leaves no
half-written output (and removes its temporary folder when it can).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError
from .dedup import DuplicateIndex
from .language import LanguageDetector
from .pii import TAGS, PIIFinder
from .records import discover
from .report import EXAMPLES

PII_ACTIONS = ("redact", "drop", "keep")
REPORT = "clean_report.json"


def check_paths(src: Path, out: Path) -> None:
    """Refuse an output that is, or is inside, the input, or that already exists."""
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or src_r in out_r.parents:
        raise ConfigError(f"--out {out} is {'the input' if out_r == src_r else 'inside the input'} "
                          f"{src}; choose a folder outside it (the input is never written)")
    if out.exists():
        raise ConfigError(f"--out {out} already exists; choose a new folder (nothing is overwritten)")


def clean_corpus(path: str | Path, out: str | Path, *, pii: str = "redact", dedup: str = "exact",
                 languages: list[str] | None = None, unit: str = "paragraph",
                 text_fields: list[str] | None = None, label_field: str = "label",
                 threshold: float = 0.5, shingle: int = 3, window: int = 100_000,
                 terms: list[str] = (), regions: list[str] | None = None,
                 pii_types: list[str] | None = None, log: Callable = print,
                 on_record: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Clean a corpus into the new folder `out`; returns the report (also out/clean_report.json).

    `on_record(n)` is called after each record (progress, tests of interruption).
    """
    src, out = Path(path).expanduser(), Path(out).expanduser()
    if pii not in PII_ACTIONS:
        raise ConfigError(f"--pii must be one of {', '.join(PII_ACTIONS)}, got {pii!r}")
    if not src.exists():
        raise ConfigError(f"data path {str(src)!r} does not exist")
    check_paths(src, out)
    t0 = time.perf_counter()
    sources = discover(src, unit, text_fields, label_field)
    finder = PIIFinder(types=pii_types, terms=terms, **({"regions": regions} if regions else {}))
    dups = DuplicateIndex(dedup, threshold=threshold, shingle=shingle, window=window)
    wanted = set(languages or [])
    detect = LanguageDetector() if wanted else None
    dropped, redactions, examples = Counter(), Counter(), {}
    per_file, n_in, n_out, bytes_in = [], 0, 0, 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for source in sources:
            kept_here = seen_here = 0
            with source.writer(tmp) as write:
                for rec in source.records():
                    if rec.separator:
                        write(rec)
                        continue
                    n_in += 1
                    seen_here += 1
                    bytes_in += len(rec.text.encode("utf-8"))
                    reason = _clean_record(rec, finder, pii, dups, detect, wanted, redactions)
                    if reason is None:
                        write(rec)
                        kept_here += 1
                        n_out += 1
                    else:
                        dropped[reason] += 1
                        shown = examples.setdefault(reason, [])
                        if len(shown) < EXAMPLES:
                            head = " ".join(finder.redact(rec.text).split())[:100]
                            shown.append(f"{source.name} line {rec.line}: {head}")
                    if on_record is not None:
                        on_record(n_in)
            per_file.append({"file": source.name, "documents": seen_here, "kept": kept_here})
        report = {
            "input": str(src), "output": str(out), "documents_in": n_in, "documents_out": n_out,
            "dropped": dict(dropped), "redacted": dict(redactions), "examples_dropped": examples,
            "files": per_file,
            "options": {"pii": pii, "pii_types": finder.types, "dedup": dedup,
                        "languages": sorted(wanted), "unit": unit, "near_threshold": threshold,
                        "shingle_words": shingle, "window": window},
            "seconds": round(time.perf_counter() - t0, 2),
            "mb_per_s": round(bytes_in / 1e6 / max(time.perf_counter() - t0, 1e-9), 2),
        }
        (tmp / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        os.rename(tmp, out)  # the only moment `out` appears: complete, or not at all
    except BaseException:  # Ctrl-C included: no half-written output survives
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(format_summary(report))
    return report


def _clean_record(rec: Any, finder: PIIFinder, pii: str, dups: DuplicateIndex,
                  detect: LanguageDetector | None, wanted: set[str],
                  redactions: Counter) -> str | None:
    """Apply the filters to one record in place; the reason it is dropped, or None to keep it."""
    if detect is not None and any(v.strip() and detect(v) not in wanted for v in rec.fields.values()):
        return "language"
    if pii != "keep":
        found = {name: finder.find(value) for name, value in rec.fields.items()}
        if any(found.values()):
            if pii == "drop":
                return "pii"
            for name, spans in found.items():
                redactions.update(s.kind for s in spans)
                rec.fields[name] = finder.redact(rec.fields[name], spans)
    hit = dups.check(rec.text)
    if hit is not None:
        return f"{hit[0]}_duplicate"
    return None


def format_summary(r: dict[str, Any]) -> str:
    """The few lines printed at the end of a clean."""
    dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(r["dropped"].items())) or "none"
    redacted = ", ".join(f"{TAGS[k]} {v:,}" for k, v in sorted(r["redacted"].items())) or "none"
    return (f"cleaned {r['documents_in']:,} documents -> {r['documents_out']:,} kept in "
            f"{r['seconds']}s ({r['mb_per_s']} MB/s)\n  dropped: {dropped}\n  redacted: {redacted}\n"
            f"  report: {Path(r['output']) / REPORT}")
