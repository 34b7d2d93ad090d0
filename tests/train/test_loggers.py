"""Experiment tracking: the callback interface and what each tracker wrote, read back."""

from __future__ import annotations

import csv
import sys

import pytest

from lmforge.config import ConfigError, load_config
from lmforge.pretrain import pretrain
from lmforge.train import loggers

TINY = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.max_len=16",
        "train.batch_size=4", "train.max_steps=12", "train.eval_every=6", "train.log_every=3",
        "train.eval_batches=2", "train.warmup_steps=2", "train.progress=false",
        "train.sample_tokens=0"]


def run_tiny(corpus, out, *extra):
    cfg = load_config(None, [*TINY, f"data.path={corpus}", f"out={out}",
                             f"data.cache_dir={out.parent / 'cache'}", *extra])
    return pretrain(cfg, log=lambda *a: None)


class Recorder(loggers.Callback):
    def __init__(self):
        self.calls = []

    def on_start(self, info):
        self.calls.append(("start", info.monitor, info.hparams["train.lr"]))

    def on_log(self, step, values):
        self.calls.append(("log", step, values["tokens"]))

    def on_evaluate(self, step, metrics, lr, elapsed_s):
        self.calls.append(("eval", step, metrics["loss"]))

    def on_checkpoint(self, step, run_dir):
        self.calls.append(("ckpt", step))

    def on_end(self, step, final, status):
        self.calls.append(("end", step, status, "best_loss" in final))


def test_callbacks_see_every_event_in_order(tiny_corpus, tmp_path):
    rec = Recorder()
    with loggers.attach(rec):
        run = run_tiny(tiny_corpus, tmp_path / "r")
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["start", "log", "log", "eval", "ckpt", "log", "log", "eval", "ckpt", "end"]
    assert rec.calls[0] == ("start", ("loss", "min"), 3e-3)
    assert [c[2] for c in rec.calls if c[0] == "log"] == [3 * 64, 6 * 64, 9 * 64, 12 * 64]
    assert rec.calls[-1] == ("end", 12, "finished", True)
    # metrics.csv is unchanged by the interface: train rows every 3 steps, val rows at 6 and 12
    with open(run / "metrics.csv") as fh:
        rows = [(r["split"], int(r["step"])) for r in csv.DictReader(fh)]
    assert rows == [("train", 3), ("train", 6), ("val", 6), ("train", 9), ("train", 12), ("val", 12)]
    val = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(run / "metrics.csv"))
           if r["split"] == "val"}
    assert [c[2] for c in rec.calls if c[0] == "eval"] == pytest.approx([val[6], val[12]], rel=1e-5)


def test_a_callback_can_stop_the_run_cleanly(tiny_corpus, tmp_path):
    class StopAtFirstEval(loggers.Callback):
        def on_evaluate(self, step, metrics, lr, elapsed_s):
            return True

    with loggers.attach(StopAtFirstEval()):
        run = run_tiny(tiny_corpus, tmp_path / "r", "train.eval_every=3")
    from lmforge.train.checkpoint import load_trainer_state

    assert load_trainer_state(run)["step"] == 3  # stopped after the first evaluation, saved


def test_tensorboard_scalars_and_hparams_read_back(tiny_corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = run_tiny(tiny_corpus, tmp_path / "r", "train.log=csv,tensorboard")
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "val/loss", "val/ppl", "final/best_loss"} <= set(tags)
    assert [e.step for e in acc.Scalars("val/loss")] == [6, 12]
    with open(run / "metrics.csv") as fh:
        val = [float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "val"]
    assert [e.value for e in acc.Scalars("val/loss")] == pytest.approx(val, rel=1e-5)
    assert acc.Scalars("final/best_loss")[0].value == pytest.approx(min(val), rel=1e-5)
    # the hparams plugin holds the resolved config
    content = acc.PluginTagToContent("hparams")
    assert content and any(b"train.lr" in v for v in content.values())


def test_mlflow_params_and_metrics_read_back(tiny_corpus, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = run_tiny(tiny_corpus, tmp_path / "sweep1" / "r", "train.log=mlflow", "train.lr=0.002")
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "sweep1" / "mlruns").as_uri())
    exp = client.get_experiment_by_name("sweep1")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.run_name == "r" and found.info.status == "FINISHED"
    assert found.data.params["train.lr"] == "0.002"
    assert found.data.params["model.d_model"] == "16"
    history = client.get_metric_history(found.info.run_id, "val_loss")
    with open(run / "metrics.csv") as fh:
        val = [float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "val"]
    assert [m.step for m in history] == [6, 12]
    assert [m.value for m in history] == pytest.approx(val, rel=1e-5)
    assert found.data.metrics["final_best_loss"] == pytest.approx(min(val), rel=1e-5)


@pytest.mark.slow  # wandb starts its background service process (several seconds)
def test_wandb_offline_run_is_written(tiny_corpus, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = run_tiny(tiny_corpus, tmp_path / "r", "train.log=wandb")
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0


def test_missing_tracker_is_refused_with_an_install_hint(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'lmforge\[wandb\]'"):
        run_tiny(tiny_corpus, tmp_path / "r", "train.log=wandb")


def test_unknown_logger_name_is_a_config_error():
    with pytest.raises(ConfigError, match="train.log: unknown logger 'tensorbored'"):
        load_config(None, ["train.log=csv,tensorbored"])
