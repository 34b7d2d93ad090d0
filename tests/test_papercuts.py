"""The papercuts a new user hit (issue 19), each pinned by a test."""

from __future__ import annotations

import fcntl
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import lmforge
from lmforge.cli import main
from lmforge.config import ConfigError, load_config
from lmforge.pretrain import pretrain

ROOT = Path(__file__).parents[1]
TINY = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.max_len=16",
        "train.batch_size=4", "train.max_steps=12", "train.eval_every=6", "train.log_every=3",
        "train.eval_batches=2", "train.warmup_steps=2", "train.progress=false",
        "train.sample_tokens=0"]
TEXT = "".join(f"ROMEO: my love is {w} as the night.\nJULIET: the {s} doth shine.\n"
               for w, s in [("true", "moon"), ("blind", "sun"), ("sweet", "star")] * 100)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("papercuts")
    (root / "corpus.txt").write_text(TEXT)
    cfg = load_config(None, [*TINY, f"data.path={root / 'corpus.txt'}", f"out={root / 'run'}",
                             f"data.cache_dir={root / 'cache'}"])
    return pretrain(cfg, log=lambda *a: None)


def tiny_config(run_dir: Path, *extra: str):
    corpus = run_dir.parent / "corpus.txt"
    return load_config(None, [*TINY, f"data.path={corpus}", f"data.cache_dir={run_dir.parent / 'cache'}",
                              *extra])


def test_explicit_max_steps_stops_classify_before_its_epochs(tmp_path):
    from lmforge.tasks.classify import finetune

    data = tmp_path / "toy"
    data.mkdir()
    for name, n in (("train", 96), ("dev", 32)):
        rows = [f"the film was {'good' if i % 2 else 'bad'}\t{'pos' if i % 2 else 'neg'}" for i in range(n)]
        (data / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    notes = []
    common = dict(epochs=10, overrides=["model.arch=gru", "model.d_model=8", "train.batch_size=16",
                                        "train.progress=false"])
    run = finetune(data, out=tmp_path / "capped", log=notes.append,
                   **{**common, "overrides": common["overrides"] + ["train.max_steps=7"]})
    assert json.loads((run / "summary.json").read_text())["steps"] == 7  # 10 epochs = 60 steps
    assert any("train.max_steps=7 stops training before task.epochs=10 (60 steps)" in n for n in notes)
    run = finetune(data, out=tmp_path / "epochs", log=lambda *a: None, epochs=2,
                   overrides=common["overrides"] + ["train.max_steps=500"])
    assert json.loads((run / "summary.json").read_text())["steps"] == 12  # the epochs came first


def test_exported_gpt_continues_prompts_in_a_transformers_pipeline(tiny_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    assert main(["convert", "to-hf", str(tiny_run), "--out", str(tmp_path / "hf")]) == 0
    run = lmforge.load_run(tiny_run, device="cpu")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("ROMEO:")["input_ids"] == run.tokenizer.encode("ROMEO:")  # no <bos> / <eos> around
    pipe = transformers.pipeline("text-generation", model=str(tmp_path / "hf"),
                                 tokenizer=str(tmp_path / "hf"), device="cpu")
    text = pipe("ROMEO:", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    ours = run.generate("ROMEO:", max_new_tokens=8, temperature=0)  # 6 + 8 <= max_len 16
    assert text == "ROMEO:" + ours  # the same greedy continuation of the prompt
    # an lmforge run still wraps texts in <bos>/<eos> when it asks to
    assert run.tokenizer.encode("ROMEO:", add_special=True)[0] == run.tokenizer.bos_id


def test_python_api_errors_speak_python_and_the_cli_speaks_flags(tiny_run, capsys):
    cfg = tiny_config(tiny_run, f"out={tiny_run}")
    with pytest.raises(ConfigError, match=r"lmforge.pretrain\(cfg, resume=True\).*out='runs/another'"):
        pretrain(cfg, log=lambda *a: None)
    assert main(["pretrain", f"out={tiny_run}"]) == 1
    assert f"resume it with --resume {tiny_run} or choose another --out" in capsys.readouterr().err


def test_weights_and_tokenizer_follow_the_umask(tiny_run, tmp_path):
    old = os.umask(0o027)
    try:
        run = pretrain(tiny_config(tiny_run, "train.max_steps=2"), out=tmp_path / "r",
                       log=lambda *a: None)
    finally:
        os.umask(old)
    for name in ("model.safetensors", "tokenizer.json", "trainer_state.pt", "config.yaml"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o640, name
    assert stat.S_IMODE((tiny_run / "model.safetensors").stat().st_mode) == 0o666 & ~old


def test_run_repr_and_the_public_names(tiny_run):
    run = lmforge.load_run(tiny_run, device="cpu")
    assert repr(run).startswith(f"Run({str(tiny_run)!r}, arch=gpt, head=causal_lm, d_model=16, "
                                "n_layers=1, params=0.")
    assert {"Run", "finetune", "pretrain", "load_run", "load_config", "generate"} <= set(dir(lmforge))
    assert lmforge.Run is type(run)
    import importlib

    for name in ("finetune", "pretrain"):  # importing the submodule rebinds lmforge.<name>
        importlib.import_module(f"lmforge.{name}")
        assert callable(getattr(lmforge, name)), name
    with pytest.raises(ConfigError, match="finetune kind 'nope' is unknown"):
        lmforge.finetune("nope")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_without_a_tty_and_eval_lines_above_the_bar(tiny_run, tmp_path,
                                                                   monkeypatch, capsys):
    run = pretrain(tiny_config(tiny_run, "train.progress=true"), out=tmp_path / "piped")
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar redraws in a log file
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["3/12", "6/12", "9/12", "12/12"]
    assert "| loss " in lines[0]
    screen = FakeTTY()  # a terminal: stdout and stderr are the same screen
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    pretrain(tiny_config(tiny_run, "train.progress=true"), out=tmp_path / "tty")
    shown = screen.getvalue()
    assert "train:" in shown and "\r" in shown  # a tqdm bar was drawn
    at = shown.index("step 6: val loss")
    assert shown[at - 1] in "\r\n"  # the eval line starts a line of its own, not the bar's tail
    assert run.is_dir()


def test_generate_into_a_closed_pipe_exits_quietly(tiny_run):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "generate", str(tiny_run),
                             "--prompt", "ROMEO:", "--max-new-tokens", "20000", "--stream",
                             "--device", "cpu"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # a 4 KiB pipe (Linux's F_SETPIPE_SZ): the 20,000 characters cannot all fit in it, so the
    # generator is still writing when the reader leaves, however slowly this process runs
    # (with the default 64 KiB pipe a fast generator could finish first and exit 0)
    fcntl.fcntl(proc.stdout.fileno(), 1031, 4096)
    proc.stdout.read(3)  # like `| head -c 3`: read a little, then go away
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    # 141 = 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    assert proc.returncode == 141 and b"Traceback" not in err, err.decode()[-2000:]
