"""`lmforge convert`: Hugging Face checkpoints in and out.

    lmforge convert from-hf PATH --out RUN     # GPT-2, BERT or Llama-family folder -> lmforge run
    lmforge convert from-gguf FILE --out RUN   # GGUF (llama, mistral, qwen2, qwen3) -> run
    lmforge convert to-gguf RUN --out F.gguf --type f16   # llama run -> GGUF (f32/f16/bf16/q8_0)
    lmforge convert to-hf RUN --out DIR        # lmforge GPT / BERT / llama run -> folder transformers loads
    lmforge convert merge-lora RUN --out RUN2  # LoRA run -> plain run with the adapters folded in

Python API: `from_hf(path, out)`, `to_hf(run, out)`, `import_hf(path)` (in memory).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import nn

from ..config import ConfigError
from . import gguf_convert, hf_bert, hf_gpt2, hf_io, hf_llama, merge_lora

FAMILIES = {"gpt2": hf_gpt2, "bert": hf_bert, "llama": hf_llama, "mistral": hf_llama,
            "qwen2": hf_llama, "qwen3": hf_llama}  # HF model_type -> converter
EXPORTERS = {"gpt": hf_gpt2, "bert": hf_bert, "llama": hf_llama}  # lmforge arch -> converter


def family_of(path: str | Path) -> Any:
    """The converter module (hf_gpt2 or hf_bert) for a HF folder, from its config.json."""
    path = Path(path)
    config = hf_io.read_hf_config(path)
    return FAMILIES[hf_io.detect_family(config, str(path / "config.json"))]


def is_hf_folder(path: str | Path) -> bool:
    """True when `path` looks like a Hugging Face checkpoint folder (has config.json, no
    lmforge model_config.json) - how `--base RUN_OR_HF_DIR` tells the two apart."""
    path = Path(path)
    return (path / "config.json").is_file() and not (path / "model_config.json").is_file()


def import_hf(path: str | Path) -> tuple[nn.Module, Any, Any]:
    """(model, tokenizer, ModelConfig) from a local GPT-2 or BERT folder, without writing a run."""
    model, tokenizer, cfg, _ = hf_io.import_folder(path, family_of(path))
    return model, tokenizer, cfg


def from_hf(path: str | Path, out: str | Path, force: bool = False, log: Any = print) -> Path:
    """Convert a local GPT-2 or BERT folder into the lmforge run directory `out`."""
    return hf_io.from_hf_folder(path, out, family_of(path), force, log)


def to_hf(run: str | Path, out: str | Path, force: bool = False) -> Path:
    """Export an lmforge GPT or BERT run as a Hugging Face folder `out`."""
    return export_run(run, out, force)


def export_run(run_dir: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write an lmforge run as a Hugging Face folder with the converter of its arch
    (EXPORTERS: gpt as GPT-2, bert as BERT, llama as Llama, Mistral, Qwen2 or Qwen3)."""
    from ..run import load_run

    from ..outputs import check_output

    check_output(out, inputs=[run_dir], folder=True)  # never into a run (its own or another)
    run = load_run(run_dir, device="cpu")
    cfg = run.model_config
    if cfg.arch not in EXPORTERS:
        raise ConfigError(f"{run_dir}: model.arch={cfg.arch!r} has no Hugging Face counterpart; "
                          "exportable: gpt (as gpt2), bert (as bert), llama (as Llama, Mistral, "
                          "Qwen2 or Qwen3)")
    hf_config, state = EXPORTERS[cfg.arch].export_state(run.model.float(), cfg, run.tokenizer)
    tok_config = None
    if cfg.arch == "llama":
        from ..tokenizers.hf import read_chat_template, read_hints, run_tokenizer_config

        template = read_chat_template(Path(run_dir), read_hints(Path(run_dir))[1])
        tok_config = run_tokenizer_config(run.tokenizer, template, cfg.max_len)
    return hf_io.write_folder_whole(out, "Hugging Face export", "config.json", force, lambda folder:
                                    hf_io.write_hf_folder(folder, hf_config, state, run.tokenizer,
                                                          cfg.max_len, tok_config))


def resolve_base(path: str | Path, log: Any = print) -> Path:
    """`--base RUN_OR_HF_DIR`: an lmforge run as it is; a Hugging Face GPT-2 / BERT folder is
    converted once into an lmforge run under ~/.cache/lmforge/hf/ (keyed by its path and
    modification time) and that run is returned."""
    import hashlib

    from ..cache import cache_root
    from ..run import MODEL_CONFIG, WEIGHTS

    path = Path(path)
    if (path / MODEL_CONFIG).is_file() or not (path / "config.json").is_file():
        return path
    stamp = f"{path.resolve()}:{max(f.stat().st_mtime for f in path.iterdir())}"
    out = cache_root() / "hf" / hashlib.sha256(stamp.encode()).hexdigest()[:16]
    if not (out / WEIGHTS).is_file():
        log(f"converting the Hugging Face checkpoint {path} -> {out}")
        from_hf(path, out, force=True, log=log)
    return out


def cli(argv: list[str]) -> int:
    """lmforge convert from-hf PATH --out RUN | to-hf RUN --out DIR"""
    parser = argparse.ArgumentParser(
        prog="lmforge convert", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n")[1],
        description="Convert Hugging Face GPT-2 / BERT / Llama / Mistral / Qwen2 / Qwen3 "
                    "checkpoints and GGUF files to lmforge runs and back. "
                    "Only local folders are read; nothing is downloaded.")
    sub = parser.add_subparsers(dest="direction", required=True)
    p_in = sub.add_parser("from-hf", help="HF folder (config.json + weights + tokenizer) -> run")
    p_in.add_argument("path", help="folder with config.json, model.safetensors or "
                                   "pytorch_model.bin, and tokenizer files")
    p_in.add_argument("--out", required=True, help="run directory to create")
    p_in.add_argument("--force", action="store_true", help="overwrite an existing run there")
    p_out = sub.add_parser("to-hf", help="lmforge GPT / BERT run -> HF folder")
    p_out.add_argument("run", help="lmforge run directory")
    p_out.add_argument("--out", required=True, help="folder to write (config.json, "
                                                    "model.safetensors, tokenizer files)")
    p_out.add_argument("--force", action="store_true", help="overwrite an existing export there")
    gguf_convert.add_commands(sub)  # from-gguf, to-gguf
    merge_lora.add_commands(sub)  # merge-lora
    args = parser.parse_args(argv)
    if (done := gguf_convert.run_command(args)) is not None:
        return done
    if (done := merge_lora.run_command(args)) is not None:
        return done
    if args.direction == "from-hf":
        model_type = hf_io.detect_family(hf_io.read_hf_config(args.path))
        family = FAMILIES[model_type]
        out = hf_io.from_hf_folder(args.path, args.out, family, args.force)
        print(f"converted {model_type} checkpoint {args.path} -> {out} "
              f"(try: lmforge {'evaluate' if family is hf_bert else 'generate'} {out} ...)")
    else:
        out = to_hf(args.run, args.out, args.force)
        print(f"exported {args.run} -> {out} (transformers: AutoModel.from_pretrained({str(out)!r}))")
    return 0
