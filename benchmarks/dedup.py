"""Near-duplicate removal: recall on edited copies, false positives, throughput, peak memory.

    python benchmarks/dedup.py --mb 200 --out /tmp/dedup      # the issue's size
    python benchmarks/dedup.py --mb 20 --out /tmp/dedup       # quick

Writes a JSONL corpus of distinct documents (~1 KB of words drawn from a Zipf(1.1)
distribution over a 50,000-word vocabulary, so documents share their frequent words like
real text does) in which `--copies` of the documents are followed, a few documents later,
by a copy with 5-10 % of its words edited (a third replaced, a third deleted, a third
inserted). Then runs `lmforge data clean --pii keep --dedup near` on it in a child process
and reads back which documents survived (every record keeps its `id` and `copy_of`
fields): recall = edited copies removed / copies; false-positive rate = originals removed /
originals. Reports MB/s of the whole clean and the child's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def vocabulary(n: int, rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {"".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(int(n * 1.2))}
    return np.array(sorted(words)[:n])


def edit(words: list[str], frac: float, vocab: np.ndarray, rng: np.random.Generator) -> list[str]:
    words = list(words)
    for _ in range(max(1, round(frac * len(words)))):
        i = int(rng.integers(len(words)))
        op = rng.integers(3)
        if op == 0:
            words[i] = str(vocab[rng.integers(len(vocab))])
        elif op == 1 and len(words) > 1:
            del words[i]
        else:
            words.insert(i, str(vocab[rng.integers(len(vocab))]))
    return words


def generate(path: Path, mb: float, copies: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    vocab = vocabulary(50_000, rng)
    written, n_orig, n_copy, pending = 0, 0, 0, []
    with open(path, "w", encoding="utf-8") as fh:
        while written < mb * 1e6:
            ranks = np.minimum(rng.zipf(1.1, size=int(rng.integers(120, 220))), len(vocab)) - 1
            words = vocab[ranks].tolist()
            line = json.dumps({"id": f"o{n_orig}", "copy_of": None, "text": " ".join(words)})
            fh.write(line + "\n")
            written += len(line) + 1
            if rng.random() < copies:
                pending.append((int(rng.integers(1, 20)), n_orig, words))
            n_orig += 1
            due = [p for p in pending if p[0] <= 1]
            pending = [(k - 1, i, w) for k, i, w in pending if k > 1]
            for _, i, w in due:
                text = " ".join(edit(w, float(rng.uniform(0.05, 0.10)), vocab, rng))
                line = json.dumps({"id": f"c{n_copy}", "copy_of": f"o{i}", "text": text})
                fh.write(line + "\n")
                written += len(line) + 1
                n_copy += 1
    return {"originals": n_orig, "copies": n_copy, "mb": written / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=200)
    p.add_argument("--copies", type=float, default=0.1, help="share of documents copied + edited")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--window", type=int, default=100_000)
    p.add_argument("--out", default="/tmp/lmforge-dedup")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus" / "docs.jsonl"
    corpus.parent.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    made = generate(corpus, a.mb, a.copies, a.seed)
    print(f"generated {made['mb']:.1f} MB: {made['originals']:,} documents + {made['copies']:,} "
          f"edited copies in {time.perf_counter() - t0:.0f}s", flush=True)
    cleaned = out / f"clean-{int(time.time())}"
    cmd = [sys.executable, "-m", "lmforge", "data", "clean", str(corpus.parent), "--out", str(cleaned),
           "--pii", "keep", "--dedup", "near", "--threshold", str(a.threshold),
           "--window", str(a.window)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                                   "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    kept = set()
    with open(cleaned / "docs.jsonl", encoding="utf-8") as fh:
        for line in fh:
            kept.add(json.loads(line)["id"])
    removed_copies = sum(f"c{i}" not in kept for i in range(made["copies"]))
    removed_orig = sum(f"o{i}" not in kept for i in range(made["originals"]))
    result = {**made, "recall": removed_copies / max(made["copies"], 1),
              "false_positive_rate": removed_orig / made["originals"],
              "seconds": round(seconds, 1), "mb_per_s": round(made["mb"] / seconds, 2),
              "peak_rss_mb": round(peak_mb), "threshold": a.threshold, "window": a.window}
    print(json.dumps(result, indent=2))
    (out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
