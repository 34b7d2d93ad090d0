"""Replay bad inputs across every subcommand and count how lmforge answers them.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bad_inputs.py [--only SUBCOMMAND] [--show]

Each input runs in-process (`lmforge.cli.main`) in a fresh copy of a small world (a corpus, a
tiny GPT run, a legacy classifier run, a Hugging Face export; tests/hardening/cases.py) and
is classified:
    clear         non-zero exit, a message on stderr, no traceback, no file changed
    traceback     an exception left cli.main (or "Traceback" on stderr)
    silent        exit 0 (or nothing said) for an input that must be refused
    data-changed  a file of the world was created, changed or removed
The inputs: the test table (tests/hardening/cases.py) plus the variations below. Read-only
--out cases need a read-only tmpfs (root); they are skipped where mounting is refused.
Target: 100 % clear.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hardening.cases import CASES, TINY, Case, binary_file, build_world, corrupt_tensor_bytes, run_case, write  # noqa: E402

P = ["pretrain", "--data", "{w}/corpus.txt", "--out", "{w}/new", *TINY]


def variations(read_only: str | None) -> list[Case]:
    """Bad inputs a new user tries, grouped by subcommand (each must be refused)."""
    v: list[Case] = []

    def add(item: str, argv: list[str], setup=None) -> None:
        v.append(Case(item, argv, -1, "", setup))

    # pretrain: every config value out of range, bad corpora, configs and resumes
    for override in ["train.lr=-1", "train.lr=0", "train.lr=nan", "train.lr=abc", "train.batch_size=0",
                     "train.batch_size=-1", "train.max_steps=-5", "train.max_steps=abc",
                     "train.eval_every=-1", "train.log_every=0", "train.eval_batches=0",
                     "train.optimizer=foo", "train.precision=fp8", "train.precision=fp16",
                     "train.device=tpu", "train.device=cuda:x", "train.grad_clip=-1",
                     "train.weight_decay=-1", "train.warmup_steps=-1", "train.save_every=-2",
                     "train.patience=-1", "train.time_budget_s=-1", "train.grad_accum=0",
                     "model.d_model=0", "model.d_model=-16", "model.d_model=abc", "model.n_layers=0",
                     "model.n_heads=3", "model.max_len=0", "model.arch=foo", "model.dropout=1.5",
                     "model.dropout=-0.1", "model.activation=foo", "model.head=foo",
                     "tokenizer.kind=foo", "tokenizer.vocab_size=0", "data.val_fraction=1.5",
                     "data.val_fraction=-0.1", "unknown.key=1", "train.unknown=1", "novalue",
                     "model.max_len=100000"]:
        add(f"pretrain {override}", [*P, override])
    add("pretrain --data missing", ["pretrain", "--data", "{w}/nope.txt", "--out", "{w}/new", *TINY])
    add("pretrain --data empty", ["pretrain", "--data", "{w}/empty.txt", "--out", "{w}/new", *TINY],
        write("empty.txt", ""))
    add("pretrain --data binary", ["pretrain", "--data", "{w}/blob.bin", "--out", "{w}/new", *TINY], binary_file)
    add("pretrain --data empty folder", ["pretrain", "--data", "{w}/emptydir", "--out", "{w}/new", *TINY],
        lambda w: (w / "emptydir").mkdir())
    add("pretrain --data bad JSONL", ["pretrain", "--data", "{w}/bad.jsonl", "--out", "{w}/new", *TINY],
        write("bad.jsonl", '{"text": "a"}\n{not json\n'))
    add("pretrain --data JSONL without text", ["pretrain", "--data", "{w}/nt.jsonl", "--out", "{w}/new", *TINY],
        write("nt.jsonl", '{"body": "a"}\n'))
    add("pretrain --data tiny corpus (shorter than the context)",
        ["pretrain", "--data", "{w}/short.txt", "--out", "{w}/new", *TINY], write("short.txt", "hi"))
    add("pretrain --config missing", ["pretrain", "--config", "{w}/nope.yaml", "--out", "{w}/new"])
    add("pretrain --config bad YAML", ["pretrain", "--config", "{w}/bad.yaml", "--out", "{w}/new"],
        write("bad.yaml", "model: [unclosed\n"))
    add("pretrain --config a list", ["pretrain", "--config", "{w}/list.yaml", "--out", "{w}/new"],
        write("list.yaml", "- 1\n- 2\n"))
    add("pretrain --resume missing", ["pretrain", "--resume", "{w}/nope"])
    add("pretrain --resume a folder with no run", ["pretrain", "--resume", "{w}/hf"])
    add("pretrain --resume corrupt trainer state", ["pretrain", "--resume", "{w}/run", "train.max_steps=8"],
        lambda w: (w / "run" / "trainer_state.pt").write_bytes(b"garbage"))
    add("pretrain --resume truncated weights", ["pretrain", "--resume", "{w}/run", "train.max_steps=8"],
        lambda w: (w / "run" / "model.safetensors").write_bytes((w / "run" / "model.safetensors").read_bytes()[:100]))
    add("pretrain --resume with another architecture", ["pretrain", "--resume", "{w}/run", "model.n_layers=3"])
    add("pretrain --resume truncated config", ["pretrain", "--resume", "{w}/run", "train.max_steps=8"],
        lambda w: (w / "run" / "config.yaml").write_text((w / "run" / "config.yaml").read_text()[:40]))
    add("pretrain --resume while another command holds the run", ["pretrain", "--resume", "{w}/run", "train.max_steps=8"],
        lambda w: (w / "run" / ".lmforge.lock").write_text("1 " + __import__("socket").gethostname()))
    # generate
    for args in (["--top-p", "0"], ["--top-p", "1.5"], ["--top-k", "-1"], ["--min-p", "1"],
                 ["--repetition-penalty", "0"], ["--repetition-penalty", "-1"], ["--beams", "0"],
                 ["--num-samples", "0"], ["--batch-size", "0"], ["--temperature", "-1"],
                 ["--max-new-tokens", "-1"], ["--weights", "foo"], ["--beams", "3", "--temperature", "0.5"],
                 ["--num-samples", "4", "--beams", "2"], ["--prompt-file", "{w}/nope.txt"],
                 ["--prompt-file", "{w}/blob.bin"], ["--prompt-file", "{w}/empty.txt"],
                 ["--device", "tpu"], ["--prompt", "a", "--prompt-file", "x"]):
        setup = binary_file if "blob" in " ".join(args) else write("empty.txt", "\n\n")
        add(f"generate {' '.join(args)}", ["generate", "{w}/run", *args], setup)
    add("generate a missing run", ["generate", "{w}/nope"])
    add("generate a classifier run", ["generate", "{w}/legacy_clf"])
    add("generate with a deleted tokenizer", ["generate", "{w}/run"], lambda w: (w / "run" / "tokenizer.json").unlink())
    add("generate with a broken model_config.json", ["generate", "{w}/run"],
        lambda w: (w / "run" / "model_config.json").write_text("{"))
    # evaluate
    add("evaluate a missing run", ["evaluate", "{w}/nope", "--data", "{w}/corpus.txt"])
    add("evaluate --data missing", ["evaluate", "{w}/run", "--data", "{w}/nope.txt"])
    add("evaluate a classifier on a text file", ["evaluate", "{w}/legacy_clf", "--data", "{w}/corpus.txt"])
    add("evaluate a classifier on a missing split", ["evaluate", "{w}/legacy_clf", "--data", "{w}/d", "--split", "nope"],
        lambda w: (w / "d").mkdir())
    add("evaluate a classifier on unknown labels", ["evaluate", "{w}/legacy_clf", "--data", "{w}/test.tsv"],
        write("test.tsv", "sentence\tlabel\nfine film\tmaybe\n"))
    add("evaluate a corrupted classifier", ["evaluate", "{w}/legacy_clf", "--data", "{w}/test.tsv"],
        lambda w: write("test.tsv", "sentence\tlabel\nfine\t1\n")(w) or
        (w / "legacy_clf" / "best.safetensors").write_bytes(b"\x00" * 40))
    add("evaluate --batch-size 0", ["evaluate", "{w}/run", "--data", "{w}/corpus.txt", "--batch-size", "0"])
    # predict
    add("predict with a GPT run", ["predict", "{w}/run", "hello"])
    add("predict a missing run", ["predict", "{w}/nope", "hello"])
    add("predict with no text", ["predict", "{w}/legacy_clf"])
    add("predict --file a folder", ["predict", "{w}/legacy_clf", "--file", "{w}/run"])
    add("predict --file empty", ["predict", "{w}/legacy_clf", "--file", "{w}/empty.txt"], write("empty.txt", ""))
    add("predict with a corrupted classifier", ["predict", "{w}/legacy_clf", "good"],
        lambda w: (w / "legacy_clf" / "best.safetensors").write_bytes(b"\x00" * 40))
    # tokenizer
    add("tokenizer train --vocab-size 0", ["tokenizer", "train", "--data", "{w}/corpus.txt", "--out", "{w}/t.json", "--vocab-size", "0"])
    add("tokenizer train --data missing", ["tokenizer", "train", "--data", "{w}/nope.txt", "--out", "{w}/t.json"])
    add("tokenizer train --data binary", ["tokenizer", "train", "--data", "{w}/blob.bin", "--out", "{w}/t.json"], binary_file)
    add("tokenizer train --kind foo", ["tokenizer", "train", "--kind", "foo", "--out", "{w}/t.json"])
    add("tokenizer encode a missing tokenizer", ["tokenizer", "encode", "{w}/nope.json", "hi"])
    add("tokenizer encode a binary file as tokenizer", ["tokenizer", "encode", "{w}/blob.bin", "hi"], binary_file)
    add("tokenizer decode a word", ["tokenizer", "decode", "{w}/run/tokenizer.json", "abc"])
    add("tokenizer decode a negative id", ["tokenizer", "decode", "{w}/run/tokenizer.json", "-1"])
    add("tokenizer info on a JSON that is not a tokenizer", ["tokenizer", "info", "{w}/run/model_config.json"])
    add("tokenizer with no subcommand", ["tokenizer"])
    # glove
    add("glove train --data missing", ["glove", "train", "--data", "{w}/nope.txt", "--out", "{w}/v.txt"])
    add("glove train --data binary", ["glove", "train", "--data", "{w}/blob.bin", "--out", "{w}/v.txt"], binary_file)
    add("glove train --dim 0", ["glove", "train", "--data", "{w}/corpus.txt", "--out", "{w}/v.txt", "--dim", "0"])
    add("glove train --epochs 0", ["glove", "train", "--data", "{w}/corpus.txt", "--out", "{w}/v.txt", "--epochs", "0"])
    add("glove train --min-count too high", ["glove", "train", "--data", "{w}/corpus.txt", "--out", "{w}/v.txt",
                                             "--min-count", "100000"])
    add("glove nearest a missing file", ["glove", "nearest", "{w}/nope.txt", "king"])
    add("glove nearest an unknown word", ["glove", "nearest", "{w}/v.txt", "zebra"], write("v.txt", "king 0.1 0.2\nqueen 0.2 0.1\n"))
    add("glove nearest -k 0", ["glove", "nearest", "{w}/v.txt", "king", "-k", "0"], write("v.txt", "king 0.1 0.2\n"))
    add("glove nearest a malformed file", ["glove", "nearest", "{w}/v.txt", "king"], write("v.txt", "king 0.1 x\n"))
    add("glove analogy an unknown word", ["glove", "analogy", "{w}/v.txt", "a", "b", "c"], write("v.txt", "king 0.1 0.2\n"))
    add("glove train --out into a run", ["glove", "train", "--data", "{w}/corpus.txt", "--out", "{w}/run/v.txt"])
    # convert
    add("convert from-hf a missing folder", ["convert", "from-hf", "{w}/nope", "--out", "{w}/imp"])
    add("convert from-hf an lmforge run", ["convert", "from-hf", "{w}/run", "--out", "{w}/imp"])
    add("convert from-hf a broken config.json", ["convert", "from-hf", "{w}/hf", "--out", "{w}/imp"],
        lambda w: (w / "hf" / "config.json").write_text("{"))
    add("convert from-hf an unknown architecture", ["convert", "from-hf", "{w}/hf", "--out", "{w}/imp"],
        lambda w: (w / "hf" / "config.json").write_text('{"model_type": "mamba"}'))
    add("convert from-hf without weights", ["convert", "from-hf", "{w}/hf", "--out", "{w}/imp"],
        lambda w: (w / "hf" / "model.safetensors").unlink())
    add("convert from-hf corrupted weights", ["convert", "from-hf", "{w}/hf", "--out", "{w}/imp"],
        lambda w: (w / "hf" / "model.safetensors").write_bytes(b"\x10" * 64))
    add("convert to-hf a missing run", ["convert", "to-hf", "{w}/nope", "--out", "{w}/exp"])
    add("convert to-hf a classifier (LSTM) run", ["convert", "to-hf", "{w}/legacy_clf", "--out", "{w}/exp"])
    add("convert to-hf --out an existing file", ["convert", "to-hf", "{w}/run", "--out", "{w}/corpus.txt"])
    add("convert to-hf --out an existing export", ["convert", "to-hf", "{w}/run", "--out", "{w}/hf"])
    add("convert with no direction", ["convert"])
    # finetune
    add("finetune an unknown kind", ["finetune", "dance", "--data", "{w}/corpus.txt"])
    add("finetune lm --base missing", ["finetune", "lm", "--base", "{w}/nope", "--data", "{w}/corpus.txt", "--out", "{w}/ft"])
    add("finetune lm --data missing", ["finetune", "lm", "--base", "{w}/run", "--data", "{w}/nope.txt", "--out", "{w}/ft"])
    add("finetune lm --out the base run", ["finetune", "lm", "--base", "{w}/run", "--data", "{w}/corpus.txt", "--out", "{w}/run", *TINY])
    add("finetune lm train.lr=-1", ["finetune", "lm", "--base", "{w}/run", "--data", "{w}/corpus.txt", "--out", "{w}/ft", *TINY, "train.lr=-1"])
    add("finetune classify --data missing", ["finetune", "classify", "--data", "{w}/nope", "--out", "{w}/ft"])
    add("finetune classify --data with one label", ["finetune", "classify", "--data", "{w}/one.tsv", "--out", "{w}/ft"],
        write("one.tsv", "sentence\tlabel\n" + "good film\t1\n" * 20))
    add("finetune classify --data with mixed delimiters", ["finetune", "classify", "--data", "{w}/mix.tsv", "--out", "{w}/ft"],
        write("mix.tsv", "sentence\tlabel\ngood film,1\n"))
    add("finetune seq2seq --data missing", ["finetune", "seq2seq", "--data", "{w}/nope", "--out", "{w}/ft"])
    add("finetune seq2seq --resume missing", ["finetune", "seq2seq", "--resume", "{w}/nope"])
    add("finetune mlm --data missing", ["finetune", "mlm", "--data", "{w}/nope.txt", "--out", "{w}/ft"])
    add("finetune classify --base a corrupted run", ["finetune", "classify", "--base", "{w}/run", "--data", "{w}/t.tsv",
                                                     "--out", "{w}/ft"],
        lambda w: corrupt_tensor_bytes(w) or write("t.tsv", "sentence\tlabel\n" + "good\t1\nbad\t0\n" * 10)(w))
    # compare
    add("compare --archs foo", ["compare", "--archs", "foo", "--out", "{w}/cmp"])
    add("compare --budget abc", ["compare", "--archs", "gpt", "--budget", "abc", "--out", "{w}/cmp"])
    add("compare --params abc", ["compare", "--archs", "gpt", "--params", "abc", "--out", "{w}/cmp"])
    add("compare --out an existing file", ["compare", "--archs", "gpt", "--budget", "1000-tokens", "--out", "{w}/corpus.txt"])
    add("compare --data missing", ["compare", "--archs", "gpt", "--data", "{w}/nope.txt", "--out", "{w}/cmp"])
    # the command line itself
    add("an unknown command", ["trian"])
    add("no command", [])
    # serve (its server is rewritten in another branch; only the refusals before it starts)
    add("serve a missing run", ["serve", "{w}/nope"])
    add("serve --port 99999", ["serve", "{w}/run", "--port", "99999"])
    if read_only:
        add("pretrain --out on a read-only file system", ["pretrain", "--data", "{w}/corpus.txt", "--out", f"{read_only}/p", *TINY])
        add("compare --out on a read-only file system", ["compare", "--archs", "gpt", "--budget", "1000-tokens",
                                                         "--out", f"{read_only}/c"])
        add("tokenizer train --out on a read-only file system", ["tokenizer", "train", "--data", "{w}/corpus.txt",
                                                                  "--out", f"{read_only}/t.json"])
        add("convert to-hf --out on a read-only file system", ["convert", "to-hf", "{w}/run", "--out", f"{read_only}/e"])
        add("glove train --out on a read-only file system", ["glove", "train", "--data", "{w}/corpus.txt",
                                                              "--out", f"{read_only}/v.txt", "--epochs", "1", "--min-count", "1"])
    return v


def mount_read_only() -> str | None:
    folder = tempfile.mkdtemp(prefix="lmforge-ro-")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", folder],
                        capture_output=True).returncode == 0
    return folder if ok else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="replay only the inputs of this subcommand")
    parser.add_argument("--show", action="store_true", help="print every input's outcome")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import lmforge.train.loop as loop

    loop._plot = lambda run_dir: None  # plots are not what is measured
    read_only = mount_read_only()
    base = Path(tempfile.mkdtemp(prefix="lmforge-bad-"))
    try:
        world = build_world(base / "world")
        cases = [*CASES, *variations(read_only)]
        if args.only:
            cases = [c for c in cases if c.argv[:1] == [args.only]]
        counts: Counter = Counter()
        by_command: dict[str, Counter] = {}
        bad = []
        t0 = time.perf_counter()
        for case in cases:
            outcome = run_case(case, world, base / "scratch")
            verdict = outcome.verdict(case)
            counts[verdict] += 1
            from lmforge.cli import COMMANDS

            group = case.argv[0] if case.argv and case.argv[0] in COMMANDS else "(lmforge)"
            by_command.setdefault(group, Counter())[verdict] += 1
            first = (outcome.escaped.strip().splitlines() or outcome.stderr.strip().splitlines() or [""])[-1]
            if verdict != "clear":
                bad.append((verdict, case.command(), first, outcome.changed))
            if args.show:
                print(f"{verdict:<12} {case.item}: {first[:150]}")
        total = sum(counts.values())
        print(f"\n{total} bad inputs across {len(by_command)} subcommands in {time.perf_counter() - t0:.0f}s"
              f"{'' if read_only else ' (read-only cases skipped: mount refused)'}")
        for name, c in sorted(by_command.items()):
            print(f"  {name:<10} {sum(c.values()):>3}  " + "  ".join(f"{k} {c[k]}" for k in sorted(c)))
        print(f"clear {counts['clear']} ({100 * counts['clear'] / max(total, 1):.1f} %) | traceback "
              f"{counts['traceback']} | silent {counts['silent']} | data-changed {counts['data-changed']}")
        for verdict, command, first, changed in bad:
            print(f"  {verdict}: {command[:160]}\n      {first[:200]} {changed or ''}")
        return 0 if counts["clear"] == total else 1
    finally:
        if read_only:
            subprocess.run(["umount", read_only], capture_output=True)
            shutil.rmtree(read_only, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
