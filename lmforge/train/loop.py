"""The one training loop, for every task.

A task supplies the model and knows its batches, loss and metrics; the loop knows nothing
task-specific. What a task must provide (see `lmforge.tasks.lm.LanguageModelingTask`):

    task.model                      nn.Module being trained
    task.next_batch() -> batch      the next training micro-batch, already on the device
    task.loss(batch) -> Tensor      scalar loss of a batch (with autograd graph)
    task.batch_tokens(batch) -> int tokens (or examples) in a batch, for throughput
    task.evaluate() -> dict         validation metrics; must include "loss"
    task.metric_names: list[str]    extra metric columns of metrics.csv (e.g. ["ppl"])
    task.monitor: tuple[str, str]   (metric, "min" | "max") for best checkpoint / early stopping
    task.state_dict() / load_state_dict(state)   data position, for exact resume
    task.on_evaluate(step, run_dir) optional hook (samples.txt for language models)
    task.flops_per_unit: float      optional: training FLOPs per unit of batch_tokens, for the
                                    mfu column (default: model FLOPs per token, train/mfu.py)

Under torchrun every rank runs this loop on its own micro-batches (the task gives each rank
its own data); DDP all-reduces gradients on the last micro-step. Rank 0 alone writes logs,
samples and checkpoints and evaluates (every rank does under FSDP, whose forward needs them
all); decisions that change control flow (stop requests, time budget, divergence, early
stopping) come from values reduced or broadcast across ranks, so no rank is left waiting in
a collective the others skipped. A stop request (Ctrl-C, SIGTERM) takes effect at the next
log point when distributed, at once otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..config import ConfigError
from . import distributed, loggers
from . import mfu as mfu_lib
from .activation_checkpointing import apply_memory_options
from . import privacy as privacy_lib
from .checkpoint import (BEST_WEIGHTS, TRAINER_STATE, WEIGHTS, load_trainer_state, load_weights,
                         save_checkpoint, save_weights)
from .optim import LINE_SEARCH_OPTIMIZERS, build_optimizer
# device, precision, RNG and metrics.csv helpers live in runtime.py (inference imports them
# without the loop); imported here under their old names
from .runtime import (MetricsLog, _device_peak, plot_metrics, autocast_context, pick_device,  # noqa: F401
                      resolve_precision, rng_state, set_rng_state)
from .progress import progress_bar
from .schedule import lr_at


PLOT_EVERY_S = 30.0  # redraw plots/*.png at most this often during training (always at the end)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint (if any) is left intact."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal after checkpointing; `lmforge` exits 128 + signum and
    prints the resume command of the command that was running."""

    def __init__(self, signum: int, run_dir: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.signum, self.run_dir, self.step = signum, run_dir, step


class Trainer:
    """Runs `task` for `cfg.max_steps` optimizer steps, writing everything into `run_dir`."""

    def __init__(self, task: Any, cfg: TrainConfig, run_dir: str | Path,
                 resume: bool = False, log: Any = print) -> None:
        self.task, self.cfg, self.run_dir, self.log = task, cfg, Path(run_dir), log
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.dist = distributed.current()
        self.is_main = self.dist.rank == 0
        self.device = next(task.model.parameters()).device
        if cfg.precision == "auto":  # rank 0 decides, so that every rank computes alike
            chosen = distributed.broadcast_object(
                resolve_precision("auto", self.device) if self.is_main else None)
            self.cfg = cfg = dataclasses.replace(cfg, precision=chosen)  # the caller's stays
            self.log(f"train.precision=auto -> {cfg.precision} on {self.device.type}")
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"train.precision=fp16 needs a CUDA device (a gradient scaler); "
                              f"this run is on {self.device.type}, use bf16")
        if cfg.precision == "fp16" and cfg.optimizer in LINE_SEARCH_OPTIMIZERS:
            raise ConfigError(f"train.optimizer={cfg.optimizer} re-evaluates the loss itself and "
                              "cannot use fp16 loss scaling; use train.precision=bf16 or fp32")
        self.model = task.model
        # counted before wrapping: FSDP turns parameters into shards
        self.flops_per_unit = getattr(task, "flops_per_unit", None) or mfu_lib.flops_per_token(self.model)
        for note in apply_memory_options(self.model, cfg):  # before DDP/FSDP wrap the blocks
            self.log(note)
        # weights before wrapping: DDP and FSDP start from the model they are given
        state = self._read_checkpoint() if resume else None
        # train.dp.*: DP-SGD hooks (None without); DP layers go in before the optimizer is built
        self.privacy = privacy_lib.from_config(cfg, task, self.log)
        if self.privacy is not None:
            self.privacy.prepare(self.model)
        self.train_model = distributed.wrap_model(self.model, self.dist, cfg)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        if self.privacy is not None:  # per-example gradients in, clipped + noised steps out
            self.train_model, self.optimizer = self.privacy.wrap(self.model, self.optimizer)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self.step = 0
        self.best: float | None = None
        self.bad_evals = 0
        self.elapsed = 0.0  # training seconds, carried across resumes
        self._last_plot = time.perf_counter()
        resume_step = None
        if state is not None:
            resume_step = self._resume(state)
        # matmul peak of one device, measured once and cached on disk (train/mfu.py)
        self.peak = _device_peak(self.device, cfg.precision) if self.is_main else 0.0
        self._fsdp_hook_noted = False
        extra = ["epsilon"] if self.privacy is not None else []
        self.metrics = MetricsLog(self.run_dir / "metrics.csv", task.metric_names + extra, resume_step) \
            if self.is_main else None
        # metrics.csv + the trackers of train.log + attached callbacks (train/loggers.py)
        self.callbacks = loggers.build_callbacks(cfg.log, self.run_dir, self.metrics) \
            if self.is_main else loggers.CallbackList([])
        self._resume_step = resume_step
        self.tokens_seen = 0  # this process's training tokens (or examples), for budgets
        self._callback_stop = False

    # ------------------------------------------------------------------ checkpoints

    def _read_checkpoint(self) -> dict[str, Any]:
        """Rank 0 reads the trainer state and weights; every rank gets both (no shared disk
        needed), and an unreadable checkpoint raises on every rank, not on rank 0 alone."""
        state, error = None, None
        if self.is_main:
            try:
                state = load_trainer_state(self.run_dir)
                load_weights(self.model, self.run_dir / WEIGHTS)
            except Exception as err:  # re-raised below, on every rank
                error = err
        if self.dist.enabled:
            error = distributed.broadcast_object(error)
            if error is None:
                state = distributed.broadcast_object(state)
                distributed.broadcast_module(self.model)
        if error is not None:
            raise error
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world_size:
            raise ConfigError(
                f"{self.run_dir} was trained by {saved_world} process(es) and this job has "
                f"{self.dist.world_size}: each rank's data position cannot be mapped; resume with "
                f"the same world size (torchrun --nproc_per_node ...)")
        return state

    def _resume(self, state: dict[str, Any]) -> int:
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        own = state["ranks"][self.dist.rank] if "ranks" in state else state
        self.task.load_state_dict(own["task"])
        set_rng_state(own["rng"])
        self.step, self.best = state["step"], state.get("best")
        self.bad_evals, self.elapsed = state.get("bad_evals", 0), state.get("elapsed", 0.0)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.privacy is not None and "privacy" in state:
            self.privacy.load_state_dict(state["privacy"])
        self.log(f"resumed from {self.run_dir} at step {self.step}")
        return self.step

    def save(self) -> None:
        """Checkpoint. Under torchrun a collective: every rank calls it, rank 0 writes (with
        each rank's data position and RNG state, for an exact resume)."""
        own = {"task": self.task.state_dict(), "rng": rng_state()}
        ranks = distributed.gather_objects(own) if self.dist.enabled else None
        weights = distributed.full_weights(self.model)
        optimizer = distributed.optimizer_state(self.model, self.optimizer)
        if not self.is_main:
            return
        state = {"step": self.step, "optimizer": optimizer, **own, "best": self.best,
                 "bad_evals": self.bad_evals, "elapsed": self.elapsed,
                 "world_size": self.dist.world_size}
        if ranks is not None:
            state["ranks"] = ranks
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.privacy is not None:
            state["privacy"] = self.privacy.state_dict()
        save_checkpoint(self.run_dir, weights, state)
        self.callbacks.on_checkpoint(self.step, self.run_dir)

    # ------------------------------------------------------------------ one step

    def _set_lr(self) -> float:
        cfg = self.cfg
        if cfg.optimizer in LINE_SEARCH_OPTIMIZERS:
            return cfg.lr  # lr is the line search's first trial step: no warmup or decay
        decay = cfg.decay_steps or cfg.max_steps
        scale = lr_at(self.step, 1.0, cfg.min_lr / cfg.lr if cfg.lr else 0.0,
                      cfg.warmup_steps, decay, cfg.schedule)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale
        return self.cfg.lr * scale

    def _train_step(self) -> tuple[torch.Tensor, int]:
        """One optimizer step over `grad_accum` micro-batches; returns (mean loss, tokens)."""
        cfg, task = self.cfg, self.task
        batches = [task.next_batch() for _ in range(cfg.grad_accum)]
        tokens = sum(task.batch_tokens(b) for b in batches)
        amp = autocast_context(self.device, cfg.precision)

        def closure(backward: bool = True) -> torch.Tensor:
            # backward=False: the loss with its graph, for optimizers that differentiate it
            # themselves (Newton family); backward=True: gradients in .grad (everyone else).
            if not backward:
                with amp:
                    return sum(task.loss(b, self.train_model) for b in batches) / len(batches)
            self.optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=self.device)
            for i, batch in enumerate(batches):
                sync = i == len(batches) - 1
                with distributed.maybe_no_sync(self.train_model, sync), amp:
                    loss = task.loss(batch, self.train_model) / len(batches)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
                total += loss.detach()
            if cfg.grad_clip > 0:
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            return total

        if self.scaler is not None:
            loss = closure()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss = self.optimizer.step(closure)
        return loss.detach(), tokens

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict[str, float]:
        """Validation metrics, computed on rank 0 (on every rank under FSDP, whose forward
        gathers shards from all of them) and broadcast, so every rank decides alike."""
        metrics: dict[str, float] = {}
        if self.is_main or distributed.is_fsdp(self.model):
            self.model.eval()
            with torch.no_grad(), autocast_context(self.device, self.cfg.precision):
                metrics = self.task.evaluate()
            self.model.train()
        return distributed.broadcast_object(metrics)

    def _improved(self, metrics: dict[str, float]) -> bool:
        name, mode = self.task.monitor
        value = metrics[name]
        if self.best is None or (value < self.best if mode == "min" else value > self.best):
            self.best = value
            return True
        return False

    # ------------------------------------------------------------------ the loop

    def fit(self, until_step: int | None = None) -> dict[str, float]:
        """Train to `cfg.max_steps` (or stop early at `until_step`); returns the last metrics."""
        cfg = self.cfg
        last_step = min(cfg.max_steps, until_step) if until_step else cfg.max_steps
        self.model.train()
        progress = progress_bar(self.is_main and cfg.progress, self.step, last_step)
        outer_log, self.log = self.log, progress.wrap(self.log)  # lines above the bar, not in it
        self.callbacks.on_start(loggers.RunInfo(self.run_dir, self.task.monitor,
                                                loggers.flat_hparams(self.run_dir),
                                                self._resume_step))
        pending: list[torch.Tensor] = []  # per-step losses since the last log (on device)
        tokens_since, t_log = 0, time.perf_counter()
        last_metrics: dict[str, float] = {}
        self._stop_requested, self._stop_signal = False, int(signal.SIGINT)
        previous = self._install_signal_handlers()
        try:
            while self.step < last_step:
                t0 = time.perf_counter()
                lr = self._set_lr()
                loss, tokens = self._train_step()
                self.step += 1
                pending.append(loss)
                tokens_since += tokens * self.dist.world_size
                self.tokens_seen += tokens * self.dist.world_size
                self.elapsed += time.perf_counter() - t0
                at_log = self.step % cfg.log_every == 0 or self.step == last_step
                at_eval = cfg.eval_every > 0 and (self.step % cfg.eval_every == 0
                                                  or self.step == last_step)
                over_budget = (cfg.time_budget_s > 0 and self.elapsed >= cfg.time_budget_s) \
                    or self._callback_stop
                stop = self._stop_requested
                if self.dist.enabled:
                    # ranks agree on stopping at log points only: a collective every step
                    # would cost a host synchronisation per step
                    at_sync = at_log or at_eval
                    over_budget, stop = (distributed.any_rank(over_budget, stop, device=self.device)
                                         if at_sync else (False, False))
                else:
                    at_sync = at_log or at_eval or over_budget or stop
                if at_sync:
                    mean_loss = self._check_finite(pending)
                    now = time.perf_counter()
                    rate = tokens_since / max(now - t_log, 1e-9)
                    pending, tokens_since, t_log = [], 0, now
                    if self.is_main:
                        util = mfu_lib.mfu(rate, self.flops_per_unit, self.peak * self.dist.world_size) \
                            if self.peak > 0 else ""
                        # a callback may ask to stop (token budget): at once in one process,
                        # at the next sync point under torchrun (where the ranks agree)
                        self._callback_stop |= self.callbacks.on_log(self.step, {
                            "loss": mean_loss, "lr": lr, "tokens_per_s": rate, "mfu": util,
                            "elapsed_s": self.elapsed, "tokens": self.tokens_seen,
                            **self._privacy_spent()})
                        over_budget |= self._callback_stop and not self.dist.enabled
                    progress.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{rate:,.0f}")
                progress.update(1)
                if stop:
                    # a signal arrived during the step: the step is complete, so the
                    # checkpoint is consistent (weights, optimizer, data position, RNG)
                    self.save()
                    raise Interrupted(self._stop_signal, self.run_dir, self.step)
                if at_eval or over_budget:
                    last_metrics = self._evaluate_and_save(lr)
                    if last_metrics.get("stop"):
                        break
                elif cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
                if over_budget:
                    self.log(f"stopped at step {self.step} as a callback asked" if self._callback_stop
                             else f"time budget of {cfg.time_budget_s:g}s reached at step {self.step}")
                    break
        except BaseException as err:
            self.callbacks.on_end(self.step, {}, "interrupted" if isinstance(err, KeyboardInterrupt)
                                  else "failed")
            raise
        finally:
            progress.close()
            self.log = outer_log
            _restore_signal_handlers(previous)
        if not cfg.eval_every or self.step % cfg.eval_every:
            self.save()  # no evaluation at the last step: still leave a checkpoint
        if self.is_main:
            plot_metrics(self.run_dir)
        final = {k: v for k, v in last_metrics.items() if k != "stop"}
        if self.best is not None:
            final[f"best_{self.task.monitor[0]}"] = self.best
        self.callbacks.on_end(self.step, {**final, "steps": self.step, "train_seconds": self.elapsed},
                              "finished")
        return last_metrics

    def _install_signal_handlers(self) -> dict:
        """Ctrl-C / SIGTERM finish the current step, checkpoint, then stop; a second Ctrl-C
        stops at once (the previous checkpoint stays intact)."""
        previous = {}

        def request_stop(signum, frame):
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_requested, self._stop_signal = True, signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not the main thread: leave signals alone
                break
        return previous

    def _privacy_spent(self) -> dict[str, float]:
        return self.privacy.metrics() if self.privacy is not None else {}

    def _check_finite(self, losses: list[torch.Tensor]) -> float:
        if not losses:
            return float("nan")
        # the mean over ranks: the loss of the global batch (NaN anywhere is NaN everywhere)
        values = distributed.all_reduce_mean(torch.stack(losses).float()).cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            step = self.step - len(losses) + int(bad[0]) + 1
            raise TrainingDiverged(
                f"loss became {values[bad[0]].item()} at step {step}; stopped, "
                f"{self._what_is_intact()} (try a lower train.lr or train.grad_clip)")
        return values.mean().item()

    def _what_is_intact(self) -> str:
        if (self.run_dir / TRAINER_STATE).is_file():
            return f"the last good checkpoint in {self.run_dir} is intact"
        return "no checkpoint had been written yet, so there is nothing to resume"

    def _evaluate_and_save(self, lr: float) -> dict[str, Any]:
        metrics = self.evaluate()
        if not math.isfinite(metrics["loss"]):
            raise TrainingDiverged(
                f"validation loss became {metrics['loss']} at step {self.step}; stopped, "
                f"{self._what_is_intact()}")
        improved = self._improved(metrics)
        self.bad_evals = 0 if improved else self.bad_evals + 1
        keep = improved and getattr(self.task, "keep_best", False)
        best = distributed.full_weights(self.model) if keep else None  # a collective under FSDP
        wants_stop = False
        if self.is_main:
            wants_stop = self.callbacks.on_evaluate(
                self.step, {**metrics, **self._privacy_spent()}, lr, self.elapsed)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self.log(f"step {self.step}: val {shown}")
            if best is not None:
                save_weights(best, self.run_dir / BEST_WEIGHTS)
            hook = getattr(self.task, "on_evaluate", None)
            if hook is not None and distributed.is_fsdp(self.model):
                # the hook's forward passes would need every rank's shards: skipped
                if not self._fsdp_hook_noted:
                    self.log("note: under FSDP the evaluation hook (samples.txt) is skipped")
                    self._fsdp_hook_noted = True
            elif hook is not None:
                hook(self.step, self.run_dir)
        self.save()
        if self.is_main:
            if time.perf_counter() - self._last_plot > PLOT_EVERY_S:  # plotting costs ~0.5 s
                plot_metrics(self.run_dir)
                self._last_plot = time.perf_counter()
        if self.cfg.patience and self.bad_evals >= self.cfg.patience:
            self.log(f"early stopping at step {self.step}: no improvement in "
                     f"{self.cfg.patience} evaluations (best {self.task.monitor[0]} {self.best:.4f})")
            return {**metrics, "stop": True}
        if distributed.broadcast_object(wants_stop):  # e.g. a sweep pruned this trial
            self.log(f"stopped at step {self.step} after evaluation, as a callback asked")
            return {**metrics, "stop": True}
        return metrics




def _restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
