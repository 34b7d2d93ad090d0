"""Sweeps on Optuna: a tiny sweep finds the better learning rate, pruning stops a poor trial,
Ctrl-C then --resume continues the same study, two processes share one SQLite study, and
bad search spaces are refused naming the file and key."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from lmforge.cli import main  # noqa: E402
from lmforge.config import ConfigError  # noqa: E402
from lmforge.run import load_run  # noqa: E402
from lmforge.sweep import SweepSpec, load_space, parse_budget, run_sweep  # noqa: E402
from lmforge.train import loggers  # noqa: E402

ROOT = Path(__file__).parents[1]


@pytest.fixture
def sweep_files(tiny_corpus, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 16},
        "train": {"batch_size": 4, "max_steps": 30, "eval_every": 10, "log_every": 5,
                  "eval_batches": 2, "warmup_steps": 2, "sample_tokens": 0},
        "data": {"path": str(tiny_corpus), "cache_dir": str(tmp_path / "cache")}}))
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: categorical, choices: [1.0e-5, 1.0e-2]}\n")
    return base, space


def spec(base, space, out, **kw):
    return SweepSpec(config=str(base), space=str(space), out=str(out), budget="30steps",
                     seed=0, prune_after=1, **kw)


def rows(sweep_dir):
    with open(sweep_dir / "sweep.csv") as fh:
        return list(csv.DictReader(fh))


def test_tiny_sweep_finds_the_better_lr_and_prunes_the_worse(sweep_files, tmp_path):
    base, space = sweep_files
    out = tmp_path / "sw"
    study = run_sweep(spec(base, space, out, trials=3), log=lambda *a: None)
    table = rows(out)
    assert len(table) == 3
    tried = {float(r["train.lr"]) for r in table}
    assert tried == {1e-5, 1e-2}  # both candidates were tried ...
    assert study.best_params == {"train.lr": 1e-2}  # ... and the better one won
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["train"]["lr"] == 1e-2 and best["model"]["d_model"] == 16
    # the 1e-5 trial was pruned at its first evaluation: its run stopped at step 10 of 30
    (pruned,) = [r for r in table if r["state"] == "pruned"]
    assert float(pruned["train.lr"]) == 1e-5 and pruned["pruned_at"] == "10"
    with open(Path(pruned["run_dir"]) / "metrics.csv") as fh:
        assert max(int(r["step"]) for r in csv.DictReader(fh)) == 10
    # every trial is an ordinary run directory
    run = load_run(table[0]["run_dir"], device="cpu")
    assert run.config.train.lr == float(table[0]["train.lr"])
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000


def test_ctrl_c_then_resume_continues_the_same_study(sweep_files, tmp_path):
    base, space = sweep_files
    out = tmp_path / "sw"

    class CtrlCInSecondTrial(loggers.Callback):
        runs = 0

        def on_start(self, info):
            type(self).runs += 1

        def on_log(self, step, values):
            if type(self).runs == 2 and step == 10:
                raise KeyboardInterrupt

    with loggers.attach(CtrlCInSecondTrial()), pytest.raises(KeyboardInterrupt):
        run_sweep(spec(base, space, out, trials=3, pruner="none"), log=lambda *a: None)
    storage = f"sqlite:///{out.resolve() / 'study.db'}"
    before = optuna.load_study(study_name="sw", storage=storage)
    interrupted = before.trials[1]
    assert interrupted.user_attrs.get("interrupted") and interrupted.state.name == "FAIL"
    queued = before.trials[2]  # the same configuration, queued to run first on resume
    assert queued.state.name == "WAITING" and queued.system_attrs["fixed_params"] == interrupted.params
    assert (out / "sweep.csv").is_file()  # the report is written on the way out

    assert main(["sweep", "--resume", str(out)]) == 0
    after = optuna.load_study(study_name="sw", storage=storage)
    numbers = [t.number for t in after.trials]
    assert numbers == [0, 1, 2, 3]  # one study: 3 finished trials + the interrupted one
    # the interrupted configuration ran again first, to the end
    retry = after.trials[2]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == interrupted.params
    assert retry.state.name == "COMPLETE" and retry.user_attrs["last_step"] == 30
    assert len(rows(out)) == 4


@pytest.mark.slow  # two interpreters start (torch + optuna imports), ~15 s on 2 cores
def test_two_processes_work_on_one_sqlite_study(sweep_files, tmp_path):
    base, space = sweep_files
    space.write_text("train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    out = tmp_path / "sw"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "lmforge", "sweep"]
    first = subprocess.Popen([*cmd, "--config", str(base), "--space", str(space), "--out", str(out),
                              "--trials", "4", "--budget", "20steps", "--pruner", "none"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not (out / "sweep.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.Popen([*cmd, "--resume", str(out), "--storage",
                               f"sqlite:///{out.resolve() / 'study.db'}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = [p.communicate(timeout=240)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 4 <= len(done) <= 5  # a worker may start one more while the other finishes the 4th
    dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(set(dirs)) == len(dirs)
    # both workers ran trials of the one study
    ran = [{int(line.split()[1]) for line in o.splitlines() if line.startswith("trial ")}
           for o in outputs]
    assert ran[0] and ran[1] and not ran[0] & ran[1]


def test_a_finetune_task_is_swept_through_the_dispatch(tmp_path):
    data = tmp_path / "toy"
    data.mkdir()
    for name, n in (("train", 120), ("dev", 40)):
        lines = [f"the film was {'good' if i % 2 else 'bad'} and {'great' if i % 2 else 'dull'}"
                 f"\t{'pos' if i % 2 else 'neg'}" for i in range(n)]
        (data / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    base = tmp_path / "clf.yaml"
    base.write_text(yaml.safe_dump({
        "model": {"arch": "gru", "head": "classifier", "d_model": 16, "max_len": 16},
        "tokenizer": {"kind": "word"}, "train": {"batch_size": 16, "progress": False},
        "task": {"epochs": 2}}))
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: logfloat, low: 1.0e-3, high: 3.0e-2}\n"
                     "model.pooling: {type: categorical, choices: [mean, max]}\n")
    out = tmp_path / "sw"
    assert main(["sweep", "--task", "classify", "--config", str(base), "--space", str(space),
                 "--out", str(out), "--trials", "2", "--budget", "100steps", "--seed", "1",
                 "--", "--data", str(data)]) == 0
    table = rows(out)
    assert [r["state"] for r in table] == ["complete", "complete"]
    for r in table:  # the objective is the classifier's dev accuracy, as its run recorded it
        with open(Path(r["run_dir"]) / "metrics.csv") as fh:
            acc = [float(x["accuracy"]) for x in csv.DictReader(fh) if x["split"] == "val"]
        assert float(r["value"]) == pytest.approx(max(acc), abs=1e-6)


def test_token_budget_stops_each_trial_at_its_log_point(sweep_files, tmp_path):
    base, space = sweep_files
    out = tmp_path / "sw"
    run_sweep(SweepSpec(config=str(base), space=str(space), out=str(out), trials=1, seed=0,
                        budget="2000tokens", overrides=["train.max_steps=100"]),
              log=lambda *a: None)
    (row,) = rows(out)
    # 4 sequences x 16 tokens = 64 tokens a step; logged every 5 steps: 2,240 >= 2,000 at step 35
    assert row["last_step"] == "35"
    with open(Path(row["run_dir"]) / "metrics.csv") as fh:
        val = [int(r["step"]) for r in csv.DictReader(fh) if r["split"] == "val"]
    assert val == [10, 20, 30, 35]  # evaluated and checkpointed where it stopped


def test_budgets_parse():
    assert (parse_budget("2m").kind, parse_budget("2m").amount) == ("time", 120)
    assert (parse_budget("500steps").kind, parse_budget("500steps").amount) == ("steps", 500)
    assert (parse_budget("2Mtokens").kind, parse_budget("2Mtokens").amount) == ("tokens", 2e6)
    with pytest.raises(ConfigError, match="--budget '2 parsecs'"):
        parse_budget("2 parsecs")


@pytest.mark.parametrize("text, message", [
    ("train.lrr: {type: float, low: 0.1, high: 1}\n", r"'train.lrr' is not a config key"),
    ("train.lr: {type: float, low: 1, high: 0.1}\n", r"train.lr: low \(1\) must be below high"),
    ("train.lr: {type: gaussian}\n", r"train.lr: type must be one of"),
    ("train.lr: {type: logfloat, low: 0, high: 1}\n", r"log scale needs low > 0"),
    ("model.d_model: {type: categorical, choices: []}\n", r"non-empty list `choices`"),
])
def test_bad_search_spaces_are_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_space(path)
    assert str(path) in str(err.value)


def test_conditional_keys_are_sampled_only_when_their_condition_holds(tmp_path):
    from lmforge.sweep.space import sample

    path = tmp_path / "space.yaml"
    path.write_text("train.optimizer: {type: categorical, choices: [adamw, sgd]}\n"
                    "train.momentum: {type: float, low: 0.5, high: 0.99, when: {train.optimizer: sgd}}\n")
    params = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        drawn = sample(study.ask(), params)
        assert ("train.momentum" in drawn) == (drawn["train.optimizer"] == "sgd")
        seen.add(drawn["train.optimizer"])
    assert seen == {"adamw", "sgd"}


def test_the_first_trial_runs_the_recipes_own_values(sweep_files, tmp_path):
    base, space = sweep_files
    recipe = yaml.safe_load(base.read_text())
    recipe["train"]["lr"] = 1.0e-5  # one of the space's choices
    base.write_text(yaml.safe_dump(recipe))
    study = run_sweep(spec(base, space, tmp_path / "sw", trials=1, pruner="none"), log=lambda *a: None)
    first = study.trials[0]
    assert first.params == {"train.lr": 1e-5} and first.user_attrs["baseline"] is True
    assert load_run(first.user_attrs["run_dir"], device="cpu").config.train.lr == 1e-5
    study = run_sweep(spec(base, space, tmp_path / "sw2", trials=1, pruner="none", baseline=False),
                      log=lambda *a: None)
    assert "baseline" not in study.trials[0].user_attrs


def test_the_baseline_takes_only_values_the_space_holds(tmp_path):
    from lmforge.sweep.space import baseline

    path = tmp_path / "space.yaml"
    path.write_text("train.lr: {type: logfloat, low: 1.0e-4, high: 1.0e-2}\n"
                    "train.warmup_steps: {type: int, low: 0, high: 200, step: 25}\n"
                    "model.d_model: {type: categorical, choices: [64, 128]}\n"
                    "train.optimizer: {type: categorical, choices: [adamw, sgd]}\n"
                    "train.momentum: {type: float, low: 0.5, high: 0.99, when: {train.optimizer: sgd}}\n")
    params = load_space(path)
    fixed = {"train.lr": 3e-3, "train.warmup_steps": 100, "model.d_model": 128,
             "train.optimizer": "adamw", "train.momentum": 0.9}
    assert baseline(params, fixed) == {"train.lr": 3e-3, "train.warmup_steps": 100,
                                       "model.d_model": 128, "train.optimizer": "adamw"}
    # outside the range, off the step grid, not a choice: left to the sampler
    fixed.update({"train.lr": 0.1, "train.warmup_steps": 110, "model.d_model": 96,
                  "train.optimizer": "sgd"})
    assert baseline(params, fixed) == {"train.optimizer": "sgd", "train.momentum": 0.9}


def test_sweep_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", "--space", "x.yaml"]) == 1
    assert capsys.readouterr().err.strip() == \
        "lmforge: error: lmforge sweep needs --config, --out (or --resume DIR)"
    assert main(["sweep", "--resume", str(tmp_path)]) == 1
    assert "no sweep.json there" in capsys.readouterr().err


def test_a_refused_sweep_leaves_no_folder(sweep_files, tmp_path, capsys):
    base, space = sweep_files
    out = tmp_path / "sw"
    assert main(["sweep", "--config", str(base), "--space", str(space), "--out", str(out),
                 "--storage", "study.db"]) == 1
    assert "--storage 'study.db' is not a database URL" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "bad.yaml").write_text("train.lr: {type: float, low: 1, high: 0.1}\n")
    assert main(["sweep", "--config", str(base), "--space", str(tmp_path / "bad.yaml"),
                 "--out", str(out)]) == 1
    assert not out.exists()
