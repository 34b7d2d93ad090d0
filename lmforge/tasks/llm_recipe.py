"""What SFT and DPO share: a pretrained causal LM as the base, LoRA or full fine-tuning,
the run directory, the adapters at the end, and merging them back.

    model, m = load_base_model(base_dir)          # a LoRA base is merged first
    model = make_policy(model, m, "lora", lora)   # adapters on, everything else frozen
    ...Trainer...
    finish_lora(run_dir, model, base_dir, merge=True)   # adapter.safetensors (+ RUN/merged)
    merge_run(run_dir, out)                       # `lmforge convert merge-lora RUN --out RUN2`

A run directory of these tasks holds what any run does (config.yaml, model_config.json,
tokenizer.json, model.safetensors, trainer_state.pt, metrics.csv) plus the base's
tokenizer_config.json / chat_template.jinja (so the chat template travels with the run)
and, in LoRA mode, adapter.safetensors (`lmforge.nn.lora_io`).
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..config import (Config, ConfigError, ModelConfig, apply_overrides, config_from_dict,
                      read_yaml, save_config)
from ..models.build import build_model
from ..nn.lora import apply_lora_from_config, has_lora, mark_only_lora_trainable, merge_lora
from ..nn.lora_io import ADAPTER, load_adapter, save_adapter
from ..recipes.scaffold import RunDir, validate_config
from ..run import CONFIG, MODEL_CONFIG, TOKENIZER, read_model_config, read_run_config, weights_path
from ..train.checkpoint import WEIGHTS, atomic_write_text, load_weights, save_weights

# files that carry a base's tokenizer behaviour and chat template along with every run
TOKENIZER_FILES = (TOKENIZER, "tokenizer_config.json", "chat_template.jinja", "labels.json")
MODES = ("lora", "full")


@dataclass
class LoRASettings:
    """task.lora: low-rank adapters (mode lora)."""

    rank: int = 16
    alpha: float = 32.0  # update scaled by alpha / rank
    dropout: float = 0.05
    targets: list[str] = field(default_factory=list)  # name patterns ([] = every linear layer)
    merge: bool = True  # also write RUN/merged: a plain run with the adapters folded in

    def options(self) -> dict[str, Any]:
        """The keys model_config.json's extra.lora records (what rebuilding needs)."""
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
                "targets": list(self.targets)}


def lora_from_args(args: Any) -> dict[str, Any]:
    """The --lora.rank/alpha/dropout/targets and --no-merge options given on a command line."""
    lora = {k: getattr(args, f"lora_{k}") for k in ("rank", "alpha", "dropout", "targets")
            if getattr(args, f"lora_{k}") is not None}
    if "targets" in lora:
        lora["targets"] = [s.strip() for s in lora["targets"].split(",") if s.strip()]
    if args.no_merge:
        lora["merge"] = False
    return lora


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"task.mode={mode!r} must be one of {', '.join(MODES)}")


def load_base_model(base_dir: str | Path) -> tuple[nn.Module, ModelConfig]:
    """A causal LM base run as a plain model on the CPU (a LoRA run's adapters merged in)."""
    base_dir = Path(base_dir)
    m = read_model_config(base_dir)
    if m.head != "causal_lm":
        raise ConfigError(f"--base {base_dir} is a {m.head} run; SFT and DPO start from a "
                          "language model (model.head=causal_lm)")
    model = build_model(m)
    load_weights(model, weights_path(base_dir, "last"))
    if has_lora(model):
        model = merge_lora(model)
    return model, model.config


def make_policy(model: nn.Module, mode: str, lora: LoRASettings) -> nn.Module:
    """Add adapters and freeze the rest (lora), or leave every weight trainable (full)."""
    check_mode(mode)
    if mode == "lora":
        model.config = dataclasses.replace(model.config,
                                           extra={**model.config.extra, "lora": lora.options()})
        try:
            apply_lora_from_config(model)
        except ValueError as err:  # targets that match no layer: the message lists the layers
            raise ConfigError(f"task.lora.targets: {err}") from None
        mark_only_lora_trainable(model)
    return model


def rebuild_policy(run_dir: Path) -> nn.Module:
    """The model of a run being resumed: built from its model_config (adapters included);
    the Trainer loads its weights."""
    model = build_model(read_model_config(run_dir))
    if has_lora(model):
        mark_only_lora_trainable(model)
    return model


def run_config(resume: str | None, overrides: list[str] | None,
               new: Callable[[], Config | None], kind: str) -> Config:
    """The config of a resumed run (its config.yaml + overrides) or of a new one (`new()`,
    None when --base, --data or --out is missing)."""
    if resume:
        raw = read_yaml(Path(resume) / CONFIG)
        apply_overrides(raw, overrides or [])
        raw["out"] = str(resume)
        return config_from_dict(raw, source=str(Path(resume) / CONFIG))
    cfg = new()
    if cfg is None:
        raise ConfigError(f"finetune {kind} needs --base, --data and --out (or --resume RUN)")
    return cfg


def open_run(cfg: Config, resume: str | None) -> RunDir:
    """The scaffold's hold on the run, after the whole config is validated. SFT and DPO train
    in one process (under torchrun each rank would write the same run)."""
    from ..train import distributed

    if distributed.current().world_size > 1:
        raise ConfigError("finetune sft / dpo run in a single process; launch without torchrun")
    validate_config(cfg)  # the whole config, before anything is created
    return RunDir(cfg.out, resume=bool(resume))


def start_trainer(run: RunDir, task: Any, cfg: Config, base_dir: Path, log: Callable) -> Any:
    """The Trainer through the scaffold (which then writes config.yaml, model_config.json and,
    on a new run, the base's tokenizer files, atomically); a FinishedRun when a resumed run is
    already at train.max_steps."""
    files = {} if run.resume else {name: _copier(base_dir / name) for name in TOKENIZER_FILES
                                   if (base_dir / name).is_file()}
    return run.start(task, cfg, log=log, files=files)


def _copier(src: Path) -> Callable[[Path], None]:
    def copy(dst: Path) -> None:
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    return copy


def read_bos(base_dir: Path, tokenizer: Any) -> int | None:
    """The BOS id to prepend when the base's tokenizer_config says `add_bos_token`."""
    import json

    path = base_dir / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    return tokenizer.bos_id if config.get("add_bos_token") else None


def finish_lora(run_dir: Path, model: nn.Module, base_dir: Path, merge: bool,
                log: Callable[[str], Any] = print) -> None:
    """After training in LoRA mode: adapter.safetensors, and RUN/merged when asked."""
    path = save_adapter(model, run_dir / ADAPTER, base_dir)
    log(f"adapters: {path} ({path.stat().st_size / 1e6:.2f} MB, base {base_dir})")
    if merge:
        out = merge_run(run_dir, run_dir / "merged", force=True)
        log(f"merged run (adapters folded in): {out}")


def merge_run(run_dir: str | Path, out: str | Path, base: str | Path | None = None,
              force: bool = False) -> Path:
    """A LoRA run with its adapters folded into the weights, written as the plain run `out`.

    With adapter.safetensors and its base at hand the adapters are applied to the base
    (refused when the base's weights are not the ones they were trained on); otherwise the
    run's own full checkpoint is merged.
    """
    from ..convert.hf_io import write_folder_whole
    from ..outputs import same_path

    run_dir, out = Path(run_dir), Path(out)
    if same_path(out, run_dir):
        raise ConfigError(f"--out {out} is the run being merged; no command writes over its own "
                          "input: choose another --out")
    if not force and (out / MODEL_CONFIG).exists():
        raise ConfigError(f"{out} already holds a run; choose another --out")
    m = read_model_config(run_dir)
    if not m.extra.get("lora"):
        raise ConfigError(f"{run_dir} has no LoRA adapters (model_config.json extra.lora); "
                          "nothing to merge")
    config = read_run_config(run_dir) if (run_dir / CONFIG).is_file() else None
    base = base or (config.task.get("base") if config is not None else None)
    if (run_dir / ADAPTER).is_file() and base and (Path(base) / MODEL_CONFIG).is_file():
        model, _ = load_base_model(base)
        model.config = m
        apply_lora_from_config(model)
        load_adapter(model, run_dir / ADAPTER, base)
    elif base and not (Path(base) / MODEL_CONFIG).is_file() and (run_dir / ADAPTER).is_file() \
            and not (run_dir / WEIGHTS).is_file():
        raise ConfigError(f"{run_dir}: its base {base} is gone and the run holds adapters only; "
                          "give the base with --base")
    else:
        model = build_model(m)
        load_weights(model, weights_path(run_dir, "last"))
    merge_lora(model)

    def write(folder: Path) -> None:  # into a staging folder: `out` is replaced whole or not at all
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(model, folder / WEIGHTS)
        for name in TOKENIZER_FILES:
            if (run_dir / name).is_file():
                _copier(run_dir / name)(folder / name)
        if config is not None:
            merged = dataclasses.replace(config, model=model.config, out=str(out))
            merged.task = {**config.task, "mode": "full"}
            save_config(merged, folder / CONFIG)
        atomic_write_text(folder / MODEL_CONFIG, model.config.to_json())  # last: marks a run

    return write_folder_whole(out, "run", MODEL_CONFIG, force, write)
