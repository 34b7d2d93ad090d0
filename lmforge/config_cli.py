"""`lmforge config show|keys|diff|docs`: find out what a config key is and what a run used.

    lmforge config show configs/translate-transformer.yaml   # resolved, every key with its meaning
    lmforge config show runs/shakespeare-char                # what a run used
    lmforge config keys train                                # key, type, default, meaning
    lmforge config keys task.classify
    lmforge config diff runs/a runs/b                        # keys that differ
    lmforge config docs --out docs/config.md                 # regenerate the reference page
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError, config_from_dict, load_config, read_yaml
from .tasks.registry import task_name_of
from .config_docs import TASK_OPTIONS, KeyDoc, all_keys, markdown, section_keys


def resolve(path: str, overrides: list[str] | None = None) -> Config:
    """A run directory (its config.yaml) or a recipe YAML, plus overrides, fully resolved."""
    p = Path(path)
    if p.is_dir():
        if not (p / "config.yaml").is_file():
            raise ConfigError(f"{path}: not a run folder (no config.yaml)")
        from .config import apply_overrides

        return config_from_dict(apply_overrides(read_yaml(p / "config.yaml"), overrides or []),
                                source=str(p / "config.yaml"))
    return load_config(p, overrides or [])


def resolved_dict(cfg: Config) -> tuple[dict[str, Any], str]:
    """(config as a dict with the task section completed by its defaults, task kind or "")."""
    data = cfg.to_dict()
    kind = task_name_of(cfg)
    if kind and kind in TASK_OPTIONS:
        defaults = {k.key.split(".", 1)[1]: k.default for k in section_keys(f"task.{kind}")}
        nested: dict[str, Any] = {}
        for key, value in defaults.items():  # task.lora.rank -> {"lora": {"rank": ...}}
            node = nested
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        data["task"] = _merge(nested, data.get("task") or {})
    return data, kind


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()


def show_lines(data: dict[str, Any], keys: dict[str, KeyDoc]) -> list[str]:
    """YAML lines, each key followed by its meaning (and its default when the value differs)."""
    lines: list[str] = []

    def walk(node: dict[str, Any], prefix: str, indent: int) -> None:
        for name, value in node.items():
            path = f"{prefix}.{name}" if prefix else name
            doc = keys.get(path)
            if isinstance(value, dict) and doc is None and value:
                lines.append(f"{' ' * indent}{name}:")
                walk(value, path, indent + 2)
                continue
            text = f"{' ' * indent}{name}: {_scalar(value)}"
            note = doc.doc if doc else ""
            if doc is not None and value != doc.default:
                note = f"{note} [default {_scalar(doc.default)}]".strip()
            lines.append(f"{text:<40}  # {note}" if note else text)

    walk(data, "", 0)
    return lines


def keys_table(keys: list[KeyDoc]) -> list[str]:
    width = max(len(k.key) for k in keys)
    types = max(len(k.type) for k in keys)
    return [f"{k.key:<{width}}  {k.type:<{types}}  {_scalar(k.default):<10}  {k.doc}" for k in keys]


def flat_keys(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: a config's dotted keys and their values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flat_keys(value, path))
        else:
            out[path] = value
    return out


def diff_lines(a: str, b: str) -> list[str]:
    """`key: value_a -> value_b` for each key whose resolved value differs."""
    fa, fb = (flat_keys(resolved_dict(resolve(p))[0]) for p in (a, b))
    missing = object()
    lines = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if va != vb:
            show = lambda v: "(absent)" if v is missing else _scalar(v)  # noqa: E731
            lines.append(f"{key}: {show(va)} -> {show(vb)}")
    return lines


def _best_val_loss(path: str) -> float | None:
    """The lowest validation loss in a run's metrics.csv; None for a recipe or an empty log."""
    import csv

    metrics = Path(path) / "metrics.csv"
    if not metrics.is_file():
        return None
    with open(metrics, newline="") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh) if r.get("split") == "val" and r.get("loss")]
    return min(losses) if losses else None


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lmforge config", formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  lmforge config keys train\n"
                                       "  lmforge config show configs/translate-transformer.yaml\n"
                                       "  lmforge config diff runs/a runs/b",
                                description="Show a resolved config, list keys, diff two runs "
                                            "(reference: docs/config.md).")
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="a recipe or run's fully resolved config, every key explained")
    show.add_argument("path", help="run directory or YAML recipe")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    keys = sub.add_parser("keys", help="every key of a section: type, default, meaning")
    keys.add_argument("section", nargs="?", default="",
                      help="model | tokenizer | data | train | task.classify | task.seq2seq")
    diff = sub.add_parser("diff", help="keys whose values differ between two runs or recipes")
    diff.add_argument("a")
    diff.add_argument("b")
    docs = sub.add_parser("docs", help="write the Markdown reference (docs/config.md)")
    docs.add_argument("--out", help="file to write (default: print)")
    args = p.parse_args(argv)
    if args.action == "show":
        data, kind = resolved_dict(resolve(args.path, args.overrides))
        print("\n".join(show_lines(data, all_keys(kind))))
    elif args.action == "keys":
        if not args.section:
            print("sections: model, tokenizer, data, train, "
                  + ", ".join(f"task.{k}" for k in TASK_OPTIONS) + " (lmforge config keys SECTION)")
            return 0
        print("\n".join(keys_table(section_keys(args.section))))
    elif args.action == "diff":
        lines = diff_lines(args.a, args.b) or ["no config differences"]
        best = [_best_val_loss(p) for p in (args.a, args.b)]
        if None not in best:  # two runs: what the differences came to
            lines.append(f"(result) best val loss: {best[0]:.4f} -> {best[1]:.4f}")
        print("\n".join(lines))
    else:
        text = markdown() + "\n"
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {args.out}")
        else:
            print(text, end="")
    return 0
