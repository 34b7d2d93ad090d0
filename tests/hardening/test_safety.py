"""What the bad-input table cannot express: a full disk mid-checkpoint, --force replacing a
run whole, SIGTERM's exit code and resume line, a NaN before any checkpoint, closed pipes,
recorded weight hashes, long CSV fields, <unk> warnings, evaluation file names, --help."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmforge.cli import COMMANDS, main, resume_command
from lmforge.train.weights_file import recorded_sha256

from .cases import TINY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    monkeypatch.setattr("lmforge.train.loop.plot_metrics", lambda run_dir: None)


def pretrain(corpus: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "--data", str(corpus), "--out", str(out), *TINY, *extra])


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_disk_full_mid_checkpoint_keeps_the_previous_one(tiny_corpus, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert pretrain(tiny_corpus, run) == 0  # checkpoints at steps 2 and 4
    before = digest(run)
    real_save = torch.save

    def full_disk(obj, path, *args, **kwargs):  # the weights temp file is written, then ENOSPC
        if str(path).endswith(".tmp"):
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr("lmforge.train.checkpoint.torch.save", full_disk)
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(run), "train.max_steps=8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full while writing the checkpoint of step 6" in err[0]
    assert "the checkpoint of step 4 is intact" in err[0]
    assert not list(run.glob("*.tmp"))  # the disk is freed again
    after = digest(run)
    for name in ("model.safetensors", "trainer_state.pt"):  # config.yaml: now max_steps 8
        assert after[name] == before[name], name
    monkeypatch.setattr("lmforge.train.checkpoint.torch.save", real_save)
    assert main(["pretrain", "--resume", str(run), "train.max_steps=8"]) == 0  # and it resumes


def test_disk_full_before_any_checkpoint_says_there_is_none(tiny_corpus, tmp_path, monkeypatch, capsys):
    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed "
                           "writing file data/0: file write failed (No space left on device)")

    monkeypatch.setattr("lmforge.train.checkpoint.torch.save", full_disk)
    assert pretrain(tiny_corpus, tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert "disk full while writing the checkpoint of step 2" in err
    assert "there is no earlier checkpoint" in err
    assert not (tmp_path / "run").exists()  # what the command created is gone


def test_weights_record_their_hash_and_imports_too(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    assert pretrain(tiny_corpus, run) == 0
    assert recorded_sha256(run / "model.safetensors")
    assert main(["convert", "to-hf", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert main(["convert", "from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imported")]) == 0
    assert recorded_sha256(tmp_path / "imported" / "model.safetensors")  # no trainer state there


def test_force_replaces_a_run_or_an_export_whole(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(tiny_corpus, run) == 0
    assert main(["convert", "to-hf", str(run), "--out", str(tmp_path / "hf")]) == 0
    target = tmp_path / "target"
    assert pretrain(tiny_corpus, target) == 0  # a trained run, with trainer_state.pt
    assert (target / "trainer_state.pt").is_file()
    assert main(["convert", "from-hf", str(tmp_path / "hf"), "--out", str(target), "--force"]) == 0
    assert not (target / "trainer_state.pt").exists() and not (target / "metrics.csv").exists()
    assert (target / "source.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"an old export's weights")
    assert main(["convert", "to-hf", str(run), "--out", str(tmp_path / "hf"), "--force"]) == 0
    assert not (tmp_path / "hf" / "pytorch_model.bin").exists()  # to-hf --force: whole too
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_nan_before_any_checkpoint_does_not_claim_one(tiny_corpus, tmp_path, monkeypatch, capsys):
    from lmforge.tasks.lm import LanguageModelingTask

    real = LanguageModelingTask.loss
    monkeypatch.setattr(LanguageModelingTask, "loss", lambda self, batch, model:
                        real(self, batch, model) * float("nan"))
    assert pretrain(tiny_corpus, tmp_path / "run", "train.log_every=1") == 1
    err = capsys.readouterr().err
    assert "at step 1" in err and "no checkpoint had been written yet" in err
    assert "intact" not in err


def test_resume_command_is_the_commands_own():
    assert resume_command(["finetune", "seq2seq", "--data", "d", "--out", "r"], "r") == \
        "lmforge finetune seq2seq --resume r"
    assert resume_command(["pretrain", "--out", "r"], "r") == "lmforge pretrain --resume r"


def _lmforge(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *args], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_exits_128_plus_signum_and_names_the_resume_command(sig, code, tiny_corpus,
                                                                                 tmp_path):
    run = tmp_path / "run"
    proc = _lmforge("pretrain", "--data", str(tiny_corpus), "--out", str(run), *TINY,
                    "train.max_steps=100000", "train.eval_every=0", stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    # a logged training row: the loop (and its signal handlers) is running
    while time.time() < deadline and not ((run / "metrics.csv").is_file() and
                                          len((run / "metrics.csv").read_text().splitlines()) > 1):
        time.sleep(0.2)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == code, err
    assert f"continue with `lmforge pretrain --resume {run}`" in err and "Traceback" not in err
    assert (run / "trainer_state.pt").is_file()


@pytest.mark.parametrize("args", [["generate", "{run}", "--max-new-tokens", "3000"],
                                  ["generate", "{run}", "--max-new-tokens", "3000", "--stream"],
                                  ["tokenizer", "encode", "{run}/tokenizer.json", "{text}"]])
def test_a_closed_pipe_ends_quietly(args, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    assert pretrain(tiny_corpus, run) == 0
    argv = [a.replace("{run}", str(run)).replace("{text}", "ROMEO " * 20000) for a in args]
    proc = _lmforge(*argv, stdout=subprocess.PIPE)
    proc.stdout.read(5)
    proc.stdout.close()  # like `| head -c 5`
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


def test_csv_text_field_over_128kb_loads(tmp_path):
    from lmforge.data.labelled import read_labelled

    path = tmp_path / "train.csv"
    long_text = "word " * 60_000  # 300 KB in one field
    path.write_text(f"text,label\n\"{long_text}\",pos\nshort,neg\n", encoding="utf-8")
    data = read_labelled(path)
    assert len(data.texts[0]) == len(long_text) and data.labels == ["pos", "neg"]


def test_unknown_characters_warn_once_with_examples(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(tiny_corpus, run) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "ROMEO ☃☃ ж", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "3 token(s) of the prompt are unknown" in err[0]
    assert "'☃'" in err[0] and "'ж'" in err[0]
    new_text = tmp_path / "new.txt"
    new_text.write_text("ROMEO: ☃ snow ☃\n" * 50, encoding="utf-8")
    assert main(["finetune", "lm", "--base", str(run), "--data", str(new_text),
                 "--out", str(tmp_path / "ft"), *TINY]) == 0
    out = capsys.readouterr().out
    assert out.count("unknown to the tokenizer") == 1 and "100 token(s)" in out


def test_evaluate_outputs_are_named_by_data_set(tmp_path):
    from lmforge.outputs import eval_stem

    assert eval_stem(tmp_path / "wmt14", "test") != eval_stem(tmp_path / "cnn", "test")
    assert eval_stem("data/wmt14/", "test") == "wmt14-test"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_help_lists_options_and_an_example(name, capsys):
    try:
        code = main([name, "--help"])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr().out
    assert code == 0
    assert "example" in out and f"lmforge {name}" in out.split("example", 1)[1]
    assert "--" in out  # options are listed


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs (needs root and mount rights; skipped elsewhere)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.mark.parametrize("argv", [["pretrain", "--data", "{corpus}", "--out", "{ro}/p", *TINY],
                                  ["compare", "--archs", "gpt", "--budget", "1000-tokens", "--out", "{ro}/c"]])
def test_out_on_a_read_only_file_system_is_one_line(argv, read_only_dir, tiny_corpus, capsys):
    argv = [a.replace("{ro}", str(read_only_dir)).replace("{corpus}", str(tiny_corpus)) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system" in err[0] and str(read_only_dir) in err[0]


def test_a_run_killed_before_its_first_checkpoint_does_not_block_its_out(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "model_config.json", "tokenizer.json"):  # what a kill -9 leaves
        (run / name).write_text("{}")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (run / ".lmforge.lock").write_text(f"{dead} {os.uname().nodename}\n")
    assert pretrain(tiny_corpus, run) == 0  # taken over: nothing trained was there
    assert (run / "trainer_state.pt").is_file()
    (run / ".lmforge.lock").write_text(f"{dead} {os.uname().nodename}\n")  # stale, but weights exist
    before = digest(run)
    assert pretrain(tiny_corpus, run) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert digest(run) == before


def test_predict_into_a_closed_pipe_ends_quietly(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a great film\n" * 5000, encoding="utf-8")
    legacy = ROOT / "tests" / "fixtures" / "legacy_runs" / "classifier"
    proc = _lmforge("predict", str(legacy), "--file", str(texts), stdout=subprocess.PIPE)
    proc.stdout.read(5)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)
