"""Crash safety, measured: a chain of `kill -9`s on a small pretrain, and a disk that fills up.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/kill_chain.py [--kills 20] [--steps 120]

1. Kill chain: an uninterrupted reference run, then the same run killed with SIGKILL at a
   random moment `--kills` times (each time resumed with `lmforge pretrain --resume`), then
   finished. Every tensor of the final weights must be bit-identical to the reference.
2. Disk full (where a tmpfs can be mounted: root): the run lives on a small tmpfs; after its
   first checkpoint the disk is filled; the next checkpoint must fail with one line naming the
   intact step, leave no *.tmp, keep a checkpoint that loads; after freeing space the run
   resumes to the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.max_len=32",
        "train.batch_size=8", "train.eval_every=20", "train.eval_batches=2", "train.log_every=5",
        "train.save_every=5", "train.warmup_steps=5", "train.progress=false", "train.threads=1",
        "train.sample_tokens=0", "train.device=cpu"]


def lmforge(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    err = proc.communicate(timeout=timeout)[1]
    return proc.returncode, err


def corpus(folder: Path) -> Path:
    lines = [f"ROMEO: my love is {['true', 'blind', 'sweet'][i % 3]} as the night {i % 7}." for i in range(400)]
    path = folder / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def step_of(run: Path) -> int | None:
    import torch

    try:
        return int(torch.load(run / "trainer_state.pt", map_location="cpu", weights_only=True)["step"])
    except Exception:
        return None


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and bool((x[k] == y[k]).all())
                                        and x[k].view(-1).numpy().tobytes() == y[k].view(-1).numpy().tobytes()
                                        for k in x)


def kill_chain(work: Path, data: Path, kills: int, steps: int, seed: int) -> bool:
    """Half the kills land a random moment after the run has saved a new checkpoint, half at
    the instant a checkpoint temp file appears (the window the atomic renames protect)."""
    cache = f"data.cache_dir={work / 'cache'}"
    ref, run = work / "reference", work / "killed"
    t0 = time.perf_counter()
    code, err = finish(lmforge("pretrain", "--data", data, "--out", ref, cache, *TINY, f"train.max_steps={steps}"))
    assert code == 0, err
    print(f"reference run: {steps} steps in {time.perf_counter() - t0:.1f}s (process start included)")
    rng = random.Random(seed)
    done, restarts, log = 0, 0, []
    while done < kills:
        before = step_of(run) if run.is_dir() else None
        if before is not None:
            args = ["pretrain", "--resume", run, f"train.max_steps={steps}"]
        else:  # the first start, or killed before its first checkpoint: start again on the
            restarts += run.is_dir()  # same --out (what the killed command left is taken over)
            args = ["pretrain", "--data", data, "--out", run, cache, *TINY, f"train.max_steps={steps}"]
        proc = lmforge(*args)
        at_tmp = done % 2 == 1
        while proc.poll() is None:  # wait for progress: a checkpoint newer than the last one
            if at_tmp and run.is_dir() and any(run.glob("*.tmp")):
                break
            if not at_tmp and (step_of(run) or 0) > (before or 0):
                time.sleep(rng.uniform(0.0, 1.0))
                break
            time.sleep(0.001 if at_tmp else 0.05)
        if proc.poll() is not None:
            print(f"  the run ended before kill {done + 1}; raise --steps")
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done += 1
        leftovers = sorted(p.name for p in run.glob("*.tmp")) if run.is_dir() else []
        log.append(step_of(run))
        print(f"  kill {done:>2} ({'at a temp file' if at_tmp else 'random moment'}): checkpoint "
              f"step {log[-1]}, temp files left {leftovers}")
    code, err = finish(lmforge("pretrain", "--resume", run, f"train.max_steps={steps}"))
    ok = code == 0 and same_weights(ref / "model.safetensors", run / "model.safetensors")
    print(f"kill chain: {done} kills (restarts before a first checkpoint: {restarts}), final resume "
          f"exit {code}, final weights {'bit-identical' if ok else 'DIFFERENT'} to the uninterrupted run")
    if code:
        print(err[-2000:])
    return ok and done == kills


def disk_full(work: Path, data: Path, steps: int) -> bool | None:
    mnt = work / "small_disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True).returncode:
        print("disk full: skipped (cannot mount a tmpfs here)")
        return None
    try:
        run = mnt / "run"
        proc = lmforge("pretrain", "--data", data, "--out", run, f"data.cache_dir={work / 'cache'}", *TINY,
                       f"train.max_steps={steps * 20}")
        print(f"disk full: the run lives on a 16 MB tmpfs; the disk is filled after its first checkpoint")
        while step_of(run) is None and proc.poll() is None:
            time.sleep(0.1)
        filler = mnt / "filler"
        try:  # fill the disk to the last byte
            with open(filler, "wb") as fh:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        except OSError:
            pass
        code, err = finish(proc)
        lines = [line for line in err.splitlines() if line.strip()]
        intact = step_of(run)
        from lmforge.train.checkpoint import load_trainer_state

        loads = load_trainer_state(run) is not None
        leftovers = sorted(p.name for p in run.glob("*.tmp"))
        print(f"disk full: exit {code}; stderr: {lines[-1] if lines else ''}")
        print(f"  checkpoint left: step {intact}, loads and matches its weights: {loads}; temp files left: {leftovers}")
        filler.unlink()
        code2, err2 = finish(lmforge("pretrain", "--resume", run, f"train.max_steps={(intact or 0) + 10}"))
        print(f"  after freeing space: --resume exit {code2}, now at step {step_of(run)}")
        return (code == 1 and len(lines) == 1 and "disk full while writing" in lines[0]
                and f"step {intact} is intact" in lines[0] and not leftovers and loads and code2 == 0)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-disk-full", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lmforge-kill-"))
    try:
        data = corpus(work)
        chain_ok = kill_chain(work, data, args.kills, args.steps, args.seed)
        full_ok = None if args.skip_disk_full else disk_full(work, data, args.steps)
        print(f"\nresult: kill chain {'PASS' if chain_ok else 'FAIL'}; disk full "
              f"{'skipped' if full_ok is None else 'PASS' if full_ok else 'FAIL'}")
        return 0 if chain_ok and full_ok is not False else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
