"""The bad-input table: each case is a command a user might type, the files it finds, and what
lmforge must answer (exit code, a fragment of its one stderr line). Nothing on disk may change.

Used three ways: tests/hardening/test_bad_inputs.py runs every case, scripts/errors_table.py
writes docs/errors.md from it (a test fails when that page is stale), and
benchmarks/bad_inputs.py replays it plus generated variations and counts the outcomes.

Each case runs in a fresh copy of a small "world" folder (`{w}` in its argv):
    corpus.txt   a tiny text corpus           run/     a 4-step char GPT run (recorded hash)
    legacy_clf/  a classifier run written before hashes were recorded (predict works on it)
    hf/          `run` exported as a Hugging Face GPT-2 folder
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_runs"
TINY = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.max_len=16",
        "train.max_steps=4", "train.eval_every=2", "train.eval_batches=1", "train.log_every=2",
        "train.batch_size=4", "train.warmup_steps=0", "train.progress=false", "train.threads=1",
        "train.sample_tokens=8"]


@dataclass
class Case:
    item: str  # the problem, as docs/errors.md lists it
    argv: list[str]  # "{w}" is the world folder
    code: int  # the expected exit status
    stderr: str  # a fragment the one stderr line must hold
    setup: Callable[[Path], None] | None = None  # changes the world before the command
    changes: tuple[str, ...] = ()  # paths (under the world) the command may create or change

    def command(self) -> str:
        return "lmforge " + " ".join(a if " " not in a and a else repr(a) for a in self.argv)


# --------------------------------------------------------------------------- the world


def build_world(folder: Path) -> Path:
    """The files every case starts from (built once, then copied per case)."""
    from lmforge.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"ROMEO: my love is {['true', 'blind', 'sweet'][i % 3]} as the night." for i in range(200)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["pretrain", "--data", str(folder / "corpus.txt"), "--out", str(folder / "run"),
                     f"data.cache_dir={folder / '.cache'}", *TINY]) == 0
        assert main(["convert", "to-hf", str(folder / "run"), "--out", str(folder / "hf")]) == 0
    shutil.copytree(FIXTURES / "classifier", folder / "legacy_clf")
    shutil.rmtree(folder / ".cache", ignore_errors=True)
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- setups


def corrupt_tensor_bytes(w: Path, name: str = "run/model.safetensors") -> None:
    """Flip one byte in the last tensor's data (the header stays valid: only a hash sees it)."""
    path = w / name
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))


def bigger_tokenizer(w: Path) -> None:
    """Replace the run's tokenizer by a word tokenizer with more tokens than its embedding."""
    from lmforge.tokenizers import train_tokenizer

    words = [f"w{i}" for i in range(400)]
    train_tokenizer("word", [" ".join(words)], vocab_size=500).save(w / "run" / "tokenizer.json")


def binary_file(w: Path) -> None:
    (w / "blob.bin").write_bytes(bytes(range(256)) * 4)


def write(name: str, text: str) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        (w / name).write_text(text, encoding="utf-8")
    return setup


# --------------------------------------------------------------------------- the table

CASES: list[Case] = [
    # data lost or changed
    Case("tokenizer train --out into a run it did not create",
         ["tokenizer", "train", "--kind", "char", "--data", "{w}/corpus.txt", "--out", "{w}/run/tokenizer.json"],
         2, "inside the run directory"),
    Case("tokenizer train --out a run folder",
         ["tokenizer", "train", "--kind", "char", "--data", "{w}/corpus.txt", "--out", "{w}/run"],
         2, "inside the run directory"),
    Case("tokenizer train --out its own corpus",
         ["tokenizer", "train", "--kind", "char", "--data", "{w}/corpus.txt", "--out", "{w}/corpus.txt"],
         2, "also the input"),
    Case("glove train --out its own corpus",
         ["glove", "train", "--data", "{w}/corpus.txt", "--out", "{w}/corpus.txt", "--epochs", "1"],
         2, "also the input"),
    Case("convert to-hf RUN --out RUN --force (its own input)",
         ["convert", "to-hf", "{w}/run", "--out", "{w}/run", "--force"], 1, "also the input"),
    Case("convert to-hf --out another run",
         ["convert", "to-hf", "{w}/run", "--out", "{w}/legacy_clf", "--force"], 1, "inside the run directory"),
    Case("convert from-hf --out the folder being converted",
         ["convert", "from-hf", "{w}/hf", "--out", "{w}/hf", "--force"], 1, "being converted"),
    Case("convert from-hf --out an existing run, no --force",
         ["convert", "from-hf", "{w}/hf", "--out", "{w}/run"], 1, "already holds a run"),
    Case("convert from-hf --force --out a folder that is not a run",
         ["convert", "from-hf", "{w}/hf", "--out", "{w}/notes", "--force"], 1, "does not hold a run",
         setup=lambda w: (w / "notes").mkdir() or (w / "notes" / "todo.txt").write_text("mine")),
    Case("convert to-hf --force --out a folder that is not an export",
         ["convert", "to-hf", "{w}/run", "--out", "{w}/notes", "--force"], 1, "does not hold a Hugging Face export",
         setup=lambda w: (w / "notes").mkdir() or (w / "notes" / "todo.txt").write_text("mine")),
    Case("pretrain --out an existing run", ["pretrain", "--data", "{w}/corpus.txt", "--out", "{w}/run", *TINY],
         1, "already holds a run"),
    Case("pretrain --out an existing file", ["pretrain", "--data", "{w}/corpus.txt", "--out", "{w}/corpus.txt", *TINY],
         1, "is an existing file"),
    # silent acceptance
    Case("generate on corrupted tensor bytes", ["generate", "{w}/run", "--prompt", "RO", "--max-new-tokens", "4"],
         1, "do not match the SHA-256", setup=corrupt_tensor_bytes),
    Case("evaluate on corrupted tensor bytes", ["evaluate", "{w}/run", "--data", "{w}/corpus.txt"],
         1, "do not match the SHA-256", setup=corrupt_tensor_bytes),
    Case("convert to-hf on corrupted tensor bytes", ["convert", "to-hf", "{w}/run", "--out", "{w}/out"],
         1, "do not match the SHA-256", setup=corrupt_tensor_bytes),
    Case("finetune lm --base on corrupted tensor bytes",
         ["finetune", "lm", "--base", "{w}/run", "--data", "{w}/corpus.txt", "--out", "{w}/ft", *TINY],
         1, "do not match the SHA-256", setup=corrupt_tensor_bytes),
    Case("pretrain --resume on corrupted tensor bytes", ["pretrain", "--resume", "{w}/run", "train.max_steps=8"],
         1, "does not match trainer_state.pt", setup=corrupt_tensor_bytes),
    Case("train.max_steps=0", ["pretrain", "--data", "{w}/corpus.txt", "--out", "{w}/new", *TINY,
                               "train.max_steps=0"], 1, "train.max_steps must be positive"),
    Case("train.threads=-3", ["pretrain", "--data", "{w}/corpus.txt", "--out", "{w}/new", *TINY,
                              "train.threads=-3"], 1, "train.threads must be >= 0"),
    Case("generate --temperature inf", ["generate", "{w}/run", "--temperature", "inf"], 1, "temperature must be a finite"),
    Case("generate --temperature nan", ["generate", "{w}/run", "--temperature", "nan"], 1, "temperature must be a finite"),
    # tracebacks
    Case("generate --max-new-tokens 1e11", ["generate", "{w}/run", "--max-new-tokens", "100000000000"],
         1, "ask for at most"),
    Case("generate --max-new-tokens 1e11 (float spelling)", ["generate", "{w}/run", "--max-new-tokens", "1e11"],
         2, "invalid int value"),
    Case("a tokenizer with more tokens than the embedding", ["generate", "{w}/run", "--prompt", "w1"],
         1, "the tokenizer has", setup=bigger_tokenizer, changes=("run/tokenizer.json",)),
    Case("model.n_heads=0", ["pretrain", "--data", "{w}/corpus.txt", "--out", "{w}/new", *TINY,
                             "model.n_heads=0"], 1, "model.n_heads"),
    Case("train.device=cuda without CUDA", ["pretrain", "--data", "{w}/corpus.txt", "--out", "{w}/new", *TINY,
                                           "train.device=cuda"], 1, "no CUDA device"),
    # smaller
    Case("predict --file BINARY", ["predict", "{w}/legacy_clf", "--file", "{w}/blob.bin"], 1,
         "blob.bin: not UTF-8 text", setup=binary_file),
    Case("predict --file missing", ["predict", "{w}/legacy_clf", "--file", "{w}/nope.txt"], 1, "nope.txt: no such file"),
    Case("evaluate without a run", ["evaluate"], 2, "usage: lmforge evaluate"),
    Case("generate on a folder that is not a run", ["generate", "{w}/hf"], 1, "model_config.json"),
    Case("tokenizer decode an id out of range", ["tokenizer", "decode", "{w}/run/tokenizer.json", "99999"],
         2, "out of range"),
]


# --------------------------------------------------------------------------- running one


@dataclass
class Outcome:
    code: int | None
    stderr: str
    escaped: str = ""  # the exception that left cli.main, if any (a traceback for the user)
    changed: list[str] = field(default_factory=list)

    def verdict(self, case: Case) -> str:
        """clear / traceback / silent / data-changed (the benchmark's four classes)."""
        if self.escaped or "Traceback" in self.stderr:
            return "traceback"
        if any(not path.startswith("+") for path in self.changed):
            return "data-changed"  # a file that existed was changed or removed
        if self.code == 0 or not self.stderr.strip():
            return "silent"  # accepted (whatever it wrote), or refused without a word
        if self.changed:
            return "data-changed"  # refused, yet it left new files behind
        return "clear"


def run_case(case: Case, world: Path, scratch: Path) -> Outcome:
    """Run `case` in a fresh copy of `world` (under `scratch`), in this process."""
    from lmforge.cli import main

    w = scratch
    shutil.rmtree(w, ignore_errors=True)
    shutil.copytree(world, w)
    if case.setup:
        case.setup(w)
    before = digest(w)
    argv = [a.replace("{w}", str(w)) for a in case.argv]
    err, out, code, escaped = io.StringIO(), io.StringIO(), None, ""
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 - anything else reaches the user as a traceback
            escaped = traceback.format_exc()
    after = digest(w)
    allowed = set(case.changes)
    # "+path": created by the command; "path": changed or removed
    changed = sorted(k if k in before else f"+{k}" for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and k not in allowed)
    return Outcome(code, err.getvalue(), escaped, changed)
