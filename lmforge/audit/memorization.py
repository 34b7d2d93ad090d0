"""What a language model memorized: planted canaries and verbatim training text.

    lmforge audit canaries corpus/ --out planted/ --count 20     # planted/ + planted/canaries.json
    lmforge pretrain --data planted/ ...
    lmforge audit memorization runs/x --canaries planted/canaries.json --data planted/

Exposure (Carlini et al., 2019, "The Secret Sharer"): a canary is "prefix + secret" with the
secret drawn at random from a space R (here: all `digits`-digit strings). The model ranks
every candidate secret by log p(candidate | prefix); with the true secret at rank r,
exposure = log2 |R| - log2 r bits. A never-seen secret sits mid-pack (about 1 bit); a
memorized one ranks first (log2 |R| bits, ~19.9 for 6 digits). When |R| exceeds
`--candidates`, the rank is estimated from a uniform sample of candidates (the paper's
sampling estimate): r ~ 1 + (|R| - 1) * (sampled candidates ranked above) / (sample size).

Extraction (after Carlini et al., 2021): sample texts from the model and count the
`ngram`-character windows (>= 50) that occur verbatim in the training data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import string
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import ConfigError
from .records import JsonlSource, Record, TextSource, discover

TEMPLATE = "my PIN for account {name} is {secret}"
CANARIES = "canaries.json"


# --------------------------------------------------------------------------- planting


def make_canaries(count: int, digits: int, seed: int, template: str = TEMPLATE) -> list[dict]:
    """`count` distinct canaries: a random 4-letter account name and a random secret each."""
    if "{secret}" not in template or not template.rstrip().endswith("{secret}"):
        raise ConfigError(f"--template must end with {{secret}}, got {template!r}")
    rng = random.Random(seed)
    out, names = [], set()
    while len(out) < count:
        name = "".join(rng.choices(string.ascii_lowercase, k=4))
        if name in names:
            continue
        names.add(name)
        secret = "".join(rng.choices(string.digits, k=digits))
        prefix = template.replace("{name}", name).split("{secret}")[0]
        out.append({"prefix": prefix, "secret": secret, "text": prefix + secret})
    return out


def plant_canaries(path: str | Path, out: str | Path, count: int = 20, repeats: int = 1,
                   digits: int = 6, seed: int = 0, template: str = TEMPLATE,
                   unit: str = "line", log: Callable = print) -> dict[str, Any]:
    """Copy a text / JSONL corpus into `out` with each canary inserted `repeats` times after
    random documents; writes out/canaries.json. Same safety as `data clean`."""
    from .clean import check_paths

    src, out = Path(path), Path(out)
    if count <= 0 or repeats <= 0 or digits <= 0:
        raise ConfigError("--count, --repeats and --digits must be positive")
    if not src.exists():
        raise ConfigError(f"data path {str(src)!r} does not exist")
    check_paths(src, out)
    sources = discover(src, unit=unit)
    bad = [s.name for s in sources if not isinstance(s, (TextSource, JsonlSource))]
    if bad:
        raise ConfigError(f"canaries go into language-model corpora (text or JSONL); {bad[0]} is not")
    sizes = [sum(not r.separator for r in s.records()) for s in sources]
    total = sum(sizes)
    if count * repeats > total:
        raise ConfigError(f"{count} canaries x {repeats} repeats = {count * repeats} insertions, "
                          f"but {src} has only {total} documents ({unit}s); plant fewer")
    canaries = make_canaries(count, digits, seed, template)
    rng = np.random.default_rng(seed)
    slots = rng.choice(total, size=count * repeats, replace=False)  # after which document
    plan: dict[int, list[dict]] = {}
    for i, slot in enumerate(slots.tolist()):
        plan.setdefault(slot, []).append(canaries[i % count])
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        doc = 0
        for source in sources:
            field = None
            with source.writer(tmp) as write:
                for rec in source.records():
                    write(rec)
                    if rec.separator:
                        continue
                    field = field or next(iter(rec.fields))
                    for canary in plan.get(doc, []):
                        write(_canary_record(source, rec, field, canary["text"]))
                    doc += 1
        report = {"template": template, "digits": digits, "seed": seed, "repeats": repeats,
                  "source": str(src), "documents": total, "canaries": canaries}
        (tmp / CANARIES).write_text(json.dumps(report, indent=2), encoding="utf-8")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"planted {count} canaries x {repeats} into {total:,} documents -> {out} "
        f"(secrets in {out / CANARIES}: keep it out of the training data)")
    return report


def _canary_record(source: Any, after: Record, field: str, text: str) -> Record:
    if isinstance(source, JsonlSource):
        return Record({field: text}, raw={field: text})
    # a text document of its own: a line, or a paragraph between blank lines
    ended = (after.raw or "").endswith("\n")
    lead = ("" if ended else "\n") + ("\n" if source.unit == "paragraph" else "")
    return Record({"text": lead + text}, raw="\n")


# --------------------------------------------------------------------------- measuring


def exposure(run: Any, prefix: str, secret: str, max_candidates: int = 10_000,
             seed: int = 0, batch: int = 256) -> dict[str, float]:
    """Exposure of `secret` after `prefix` among all strings of its length of digits."""
    digits = len(secret)
    space = 10 ** digits
    if space <= max_candidates:
        candidates = [str(i).zfill(digits) for i in range(space) if str(i).zfill(digits) != secret]
        exact = True
    else:
        rng = np.random.default_rng(seed)
        drawn = {int(x) for x in rng.integers(0, space, size=max_candidates + 16)}
        candidates = [str(i).zfill(digits) for i in sorted(drawn) if str(i).zfill(digits) != secret]
        candidates = candidates[:max_candidates]
        exact = False
    true_lp = run.score(prefix, secret)
    better = 0
    for i in range(0, len(candidates), batch):
        chunk = candidates[i:i + batch]
        better += sum(lp > true_lp for lp in run.score([prefix] * len(chunk), chunk))
    rank = 1 + better if exact else 1 + (space - 1) * better / len(candidates)
    return {"rank": rank, "exposure": math.log2(space) - math.log2(rank),
            "max_exposure": math.log2(space), "logprob": true_lp, "exact_rank": exact}


def greedy_completes(run: Any, prefix: str, secret: str) -> tuple[bool, str]:
    text = run.generate(prefix, max_new_tokens=2 * len(secret) + 2, temperature=0.0)
    return text.startswith(secret), text


def extraction(run: Any, corpus_files: list[Path], samples: int = 20, chars: int = 300,
               ngram: int = 50, seed: int = 0) -> dict[str, Any]:
    """Sample from the model, count `ngram`-char windows found verbatim in the training text."""
    from ..data.corpus import iter_documents
    from .pii import PIIFinder

    if ngram < 50:
        raise ConfigError(f"--ngram must be at least 50 characters, got {ngram}")
    texts = []
    tokens = max(8, chars)  # a token is at least one character
    for j in range(samples):
        out = run.generate("", max_new_tokens=tokens, temperature=1.0, seed=seed + j)
        texts.append(out[:chars])
    windows = {t[i:i + ngram] for t in texts for i in range(0, max(0, len(t) - ngram + 1))}
    found: set[str] = set()
    tail = ""
    for piece in iter_documents(corpus_files, chunk_chars=1 << 20):
        block = tail + piece  # windows that straddle two pieces
        found |= {w for w in windows - found if w in block}
        tail = piece[-(ngram - 1):]
    hit_samples = sum(any(t[i:i + ngram] in found for i in range(len(t) - ngram + 1)) for t in texts)
    finder = PIIFinder()
    return {"samples": samples, "sample_chars": chars, "ngram_chars": ngram,
            "windows": len(windows), "memorized_windows": len(found),
            "memorized_fraction": len(found) / max(len(windows), 1),
            "samples_with_memorized_text": hit_samples,
            "examples": [finder.redact(w) for w in sorted(found)[:5]]}


def audit_memorization(run_dir: str | Path, canaries: str | Path | None, data: str | None = None,
                       max_candidates: int = 10_000, samples: int = 20, sample_chars: int = 300,
                       ngram: int = 50, seed: int = 0, log: Callable = print) -> dict[str, Any]:
    """Canary exposure + greedy completion (with `canaries`), and the extraction check."""
    from ..data.corpus import resolve_corpus_files
    from ..run import load_run

    run = load_run(run_dir, device="auto", weights="last")
    if run.model_config.head != "causal_lm":
        raise ConfigError(f"{run_dir}: memorization is measured on language-model runs "
                          f"(head causal_lm), this run's head is {run.model_config.head}")
    report: dict[str, Any] = {"run": str(run_dir)}
    if canaries is None and run.config is not None and run.config.data.path:
        planted = Path(run.config.data.path) / CANARIES  # trained on a planted copy: found there
        canaries = planted if planted.is_file() else None
    if canaries:
        path = Path(canaries)
        if not path.is_file():
            raise ConfigError(f"--canaries {path}: no such file (made by `lmforge audit canaries`)")
        planted = json.loads(path.read_text(encoding="utf-8"))["canaries"]
        rows = []
        for i, c in enumerate(planted):
            row = exposure(run, c["prefix"], c["secret"], max_candidates, seed + i)
            row["greedy_completes"], row["greedy"] = greedy_completes(run, c["prefix"], c["secret"])
            rows.append({"prefix": c["prefix"], **row})
        report["canaries"] = rows
        report["mean_exposure"] = float(np.mean([r["exposure"] for r in rows]))
        report["greedy_completed"] = sum(r["greedy_completes"] for r in rows)
        log(f"canaries: mean exposure {report['mean_exposure']:.2f} of "
            f"{rows[0]['max_exposure']:.2f} bits; greedy decoding completes "
            f"{report['greedy_completed']}/{len(rows)}")
    data = data if data is not None else (run.config.data.path if run.config else "")
    report["extraction"] = extraction(run, resolve_corpus_files(data), samples, sample_chars,
                                      ngram, seed)
    e = report["extraction"]
    log(f"extraction: {e['memorized_windows']}/{e['windows']} sampled {ngram}-char windows "
        f"occur verbatim in the training data; {e['samples_with_memorized_text']}/{samples} "
        "samples contain one")
    return report


def canaries_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lmforge audit canaries",
                                description="Copy a corpus with random secrets planted in it.")
    p.add_argument("path", help="text file, folder or JSONL corpus")
    p.add_argument("--out", required=True, help="new folder: the corpus copy + canaries.json")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1, help="insertions of each canary")
    p.add_argument("--digits", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", default=TEMPLATE)
    p.add_argument("--unit", default="line", choices=("line", "paragraph"))
    a = p.parse_args(argv)
    plant_canaries(a.path, a.out, a.count, a.repeats, a.digits, a.seed, a.template, a.unit)
    return 0


def memorization_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lmforge audit memorization",
                                description="Canary exposure and training-text extraction.")
    p.add_argument("run")
    p.add_argument("--canaries", help="canaries.json from `lmforge audit canaries` (default: the "
                   "one in the run's training folder, if any)")
    p.add_argument("--data", help="training corpus (default: the run's data.path)")
    p.add_argument("--candidates", type=int, default=10_000, help="secrets ranked per canary")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--sample-chars", type=int, default=300)
    p.add_argument("--ngram", type=int, default=50, help="window length in characters (>= 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the report here as JSON")
    a = p.parse_args(argv)
    report = audit_memorization(a.run, a.canaries, a.data, a.candidates, a.samples,
                                a.sample_chars, a.ngram, a.seed)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0
