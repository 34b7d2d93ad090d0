"""GGUF files in and out of lmforge run directories.

    lmforge convert from-gguf SmolLM2-135M-Instruct.Q4_1.gguf --out runs/smollm2
    lmforge convert to-gguf runs/smollm2 --out smol-f16.gguf --type f16

Import: `gguf_read` dequantizes the file into Hugging Face terms, `hf_llama.llama_from_hf`
(the same path as a Hugging Face folder) checks every tensor and maps it onto lmforge's Llama,
and `hf_io.write_run` writes the run with its tokenizer.json and tokenizer_config.json (chat
template, special tokens, BOS/EOS rules). Export: `gguf_write`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..config import ConfigError, ModelConfig
from ..models.build import build_model
from ..run import MODEL_CONFIG
from . import hf_io
from .gguf_read import read_gguf


def import_gguf(path: str | Path) -> tuple[nn.Module, Any, ModelConfig, dict[str, Any]]:
    """(model, tokenizer, config, provenance) from a GGUF file, in memory; nothing is written."""
    from .hf_llama import llama_from_hf

    path = Path(path)
    ckpt = read_gguf(path)
    cfg, state = llama_from_hf(ckpt.hf_config, ckpt.state, str(path))
    tokenizer = ckpt.tokenizer
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ConfigError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                          f"embedding table only {cfg.vocab_size} rows")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    cfg.pad_id = int(pad) if pad is not None else 0
    model = build_model(cfg)
    hf_io.load_exact(model, state, ())
    model.eval()
    info = {"format": "gguf", "family": "llama", "path": str(path.resolve()),
            "architectures": ckpt.hf_config["architectures"],
            "gguf": {k: v for k, v in ckpt.general.items() if isinstance(v, (str, int, float))},
            "fresh_tensors": [], "tokenizer_config": ckpt.tokenizer_config}
    return model, tokenizer, cfg, info


def from_gguf(path: str | Path, out: str | Path, force: bool = False, log: Any = print) -> Path:
    """Convert a GGUF file into the lmforge run directory `out`."""
    out = Path(out)
    if hf_io.holds_run(out) and not force:  # refused before the (slow) import
        raise ConfigError(f"{out} already holds a run ({MODEL_CONFIG}); choose another --out "
                          "or pass --force to replace it")
    model, tokenizer, cfg, info = import_gguf(path)
    # --force replaces the run whole: nothing of the old run survives beside the new weights
    return hf_io.write_folder_whole(out, "run", MODEL_CONFIG, force, lambda staging: hf_io.write_run(
        staging, model, cfg, tokenizer, info, final=out))


def to_gguf(run: str | Path, out: str | Path, dtype: str = "f16", force: bool = False) -> Path:
    """Export the llama run `run` as the GGUF file `out` (f32, f16, bf16 or q8_0)."""
    from .gguf_write import to_gguf as write

    return write(run, out, dtype, force)


# --------------------------------------------------------------------------- command line


def add_commands(sub: Any) -> None:
    """`from-gguf` and `to-gguf` under `lmforge convert`."""
    from .gguf_write import TYPES

    p_in = sub.add_parser("from-gguf", help="GGUF file (llama, mistral, qwen2, qwen3) -> run")
    p_in.add_argument("path", help="a .gguf file (F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K tensors)")
    p_in.add_argument("--out", required=True, help="run directory to create")
    p_in.add_argument("--force", action="store_true", help="overwrite an existing run there")
    p_out = sub.add_parser("to-gguf", help="lmforge llama run -> GGUF file")
    p_out.add_argument("run", help="lmforge run directory (model.arch=llama)")
    p_out.add_argument("--out", required=True, help="the .gguf file to write")
    p_out.add_argument("--type", default="f16", choices=list(TYPES),
                       help="tensor type of the weight matrices (default f16; norms stay f32)")
    p_out.add_argument("--force", action="store_true", help="overwrite an existing file there")


def run_command(args: Any) -> int | None:
    """Run `from-gguf` / `to-gguf`; None for the other directions."""
    if args.direction == "from-gguf":
        out = from_gguf(args.path, args.out, args.force)
        print(f"converted {args.path} -> {out} (try: lmforge chat {out})")
        return 0
    if args.direction == "to-gguf":
        out = to_gguf(args.run, args.out, args.type, args.force)
        print(f"exported {args.run} -> {out} ({args.type}; llama.cpp: llama-cli -m {out})")
        return 0
    return None
