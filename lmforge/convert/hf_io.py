"""Hugging Face checkpoint folders in and out: the parts GPT-2 and BERT share.

A family module (`hf_gpt2`, `hf_bert`) knows its config fields and key map; this module reads
the folder (config.json, weights, tokenizer), checks every tensor against the map, and writes
an lmforge run directory, or the reverse: a folder that `transformers` loads.

Weights are read from `model.safetensors` (or its sharded index), else from
`pytorch_model.bin` through `torch.load(weights_only=True)`: a pickle that asks for anything
but tensors and plain containers is refused, never executed. Llama-family folders are read
from safetensors only (`SAFETENSORS_ONLY` in hf_llama): a pickle-only one is refused.
"""

from __future__ import annotations

import json
import shutil
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Config, ConfigError, ModelConfig, TokenizerConfig, save_config
from ..files import as_umask_allows
from ..models.build import build_model
from ..outputs import holds_run, replace_dir, same_path, staging_dir
from ..run import CONFIG, MODEL_CONFIG, TOKENIZER
from ..train.checkpoint import WEIGHTS, CheckpointError, atomic_write_text, save_weights

# Hugging Face model types lmforge converts, with the class names their config.json lists
SUPPORTED = {"gpt2": "GPT2LMHeadModel", "bert": "BertModel", "llama": "LlamaForCausalLM",
             "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
SAFE_WEIGHTS, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
PT_WEIGHTS, PT_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
OTHER_FORMATS = {"tf_model.h5": "TensorFlow", "flax_model.msgpack": "Flax", "model.ckpt.index": "TensorFlow 1"}
SOURCE = "source.json"  # provenance of a converted run
# HF activation name -> lmforge activation; gelu_new, gelu_fast and gelu_pytorch_tanh are all the
# tanh approximation of GELU, HF "gelu" is the exact (erf) one
ACTIVATIONS_IN = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "gelu_fast": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu",
                  "tanh": "tanh", "sigmoid": "sigmoid"}
ACTIVATIONS_OUT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu",
                   "tanh": "tanh", "sigmoid": "sigmoid"}


# --------------------------------------------------------------------------- reading a folder


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    return shown or "nothing"


def read_hf_config(folder: str | Path) -> dict[str, Any]:
    """config.json of a Hugging Face folder, or a one-line error saying what the folder holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder (expected a Hugging Face checkpoint folder)")
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: not a Hugging Face checkpoint folder (has {_listing(folder)}); "
                          f"expected config.json with model.safetensors or pytorch_model.bin "
                          f"(supported: {', '.join(SUPPORTED.values())})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a model config (top level is not an object)")
    return data


def detect_family(hf_config: dict[str, Any], source: str = "config.json") -> str:
    """The model type ("gpt2", "bert", "llama", "mistral", "qwen2", "qwen3") from
    `model_type` (or `architectures`); else an error naming it and the supported ones."""
    model_type = str(hf_config.get("model_type", "") or "")
    archs = hf_config.get("architectures") or []
    archs = [str(a) for a in archs] if isinstance(archs, list) else [str(archs)]
    if model_type in SUPPORTED:
        return model_type
    if not model_type:  # very old configs have no model_type: fall back on the class names
        for family, prefix in (("gpt2", "GPT2"), ("bert", "Bert"), ("llama", "LlamaFor"),
                               ("mistral", "MistralFor"), ("qwen2", "Qwen2For"), ("qwen3", "Qwen3For")):
            if any(a.startswith(prefix) for a in archs):
                return family
    found = f"model_type={model_type!r}" if model_type else "no model_type"
    if archs:
        found += f" (architectures {', '.join(archs)})"
    raise ConfigError(f"{source}: {found} is not supported; supported: "
                      + ", ".join(f"{cls} ({t})" for t, cls in SUPPORTED.items()))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _refusal_reason(err: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words (its own message is a
    page long and suggests loading unsafely)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # drop terminal colour codes
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"the pickle calls {found.group(1)}, which is not a tensor or a plain container"
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if found:
        return found.group(1).split(". ")[0][:200]
    first = _first_line(RuntimeError(text))
    if first.startswith("Weights only load failed"):  # the generic preamble says nothing
        return f"{type(err).__name__}: not a PyTorch checkpoint"
    return f"{type(err).__name__}: {first}"


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupted or truncated safetensors file "
                              f"({_first_line(err)})") from None


def _load_pickle_safely(path: Path) -> dict[str, torch.Tensor]:
    # weights_only=True: the unpickler allows tensors, dicts, lists and numbers only, so a
    # checkpoint that smuggles code (os.system in __reduce__, ...) fails here without running
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: refused: torch.load(weights_only=True) rejected it "
                              f"({_refusal_reason(err)}); it was not executed - use a "
                              "model.safetensors from a source you trust") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # some tools wrap the weights one level down
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of tensor names to tensors)")
    return state


def _load_sharded(index_path: Path, loader) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index_path}: not a shard index ({_first_line(err)})") from None
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = index_path.parent / shard
        if not path.is_file():
            raise CheckpointError(f"{index_path}: shard {shard!r} is missing")
        state.update(loader(path))
    return state


def read_hf_weights(folder: Path, safetensors_only: bool = False) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of a checkpoint folder and the file they came from (safetensors preferred)."""
    for name, index, loader in ((SAFE_WEIGHTS, SAFE_INDEX, _load_safetensors),
                                (PT_WEIGHTS, PT_INDEX, _load_pickle_safely)):
        if safetensors_only and name == PT_WEIGHTS:
            if (folder / name).is_file() or (folder / index).is_file():
                raise CheckpointError(f"{folder}: only a pickled {name if (folder / name).is_file() else index} "
                                      f"is there; refused (not loaded): this model family is read from "
                                      f"{SAFE_WEIGHTS} only - convert it with safetensors first")
            continue
        if (folder / name).is_file():
            return loader(folder / name), folder / name
        if (folder / index).is_file():
            return _load_sharded(folder / index, loader), folder / index
    other = [f"{n} ({fmt})" for n, fmt in OTHER_FORMATS.items() if (folder / n).exists()]
    has = f"only {', '.join(other)}" if other else _listing(folder)
    raise CheckpointError(f"{folder}: no weights lmforge can read (has {has}); expected "
                          f"{SAFE_WEIGHTS} or {PT_WEIGHTS}")


def check_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: Path,
                  optional: tuple[str, ...] = ()) -> list[str]:
    """Compare a checkpoint's tensors (HF names) with those the config implies.

    Raises naming the first missing, unexpected or misshapen tensor. Tensors under an
    `optional` prefix may be absent (a BertModel has no masked-LM head); their names are
    returned so the caller can report them as freshly initialised.
    """
    for name, tensor in got.items():
        if name not in expected:
            raise CheckpointError(f"{source}: unexpected tensor {name!r} {tuple(tensor.shape)}; "
                                  "it has no place in a model of this config.json")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"config.json implies {tuple(expected[name].shape)}")
    missing = [n for n in expected if n not in got]
    required = [n for n in missing if not n.startswith(optional)]
    if required:
        more = f" (and {len(required) - 1} more)" if len(required) > 1 else ""
        raise CheckpointError(f"{source}: missing tensor {required[0]!r}{more}")
    return missing


def load_exact(model: nn.Module, state: dict[str, torch.Tensor], may_stay_fresh: tuple[str, ...]) -> None:
    """Load converted weights; every model tensor must be covered unless tied to a loaded one
    or under a `may_stay_fresh` prefix (an optional part the checkpoint lacked)."""
    own = model.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, f"converter produced unknown names {unexpected[:3]}"
    ptrs = {own[n].data_ptr() for n in state}
    left = [n for n in missing if not n.startswith(may_stay_fresh) and own[n].data_ptr() not in ptrs]
    assert not left, f"converter left tensors unset: {left[:3]}"


# --------------------------------------------------------------------------- writing a run


def write_folder_whole(out: str | Path, what: str, marker: str, force: bool,
                       write: Any) -> Path:
    """Fill `out` through `write(folder)`, replacing an existing `what` (recognised by
    `marker`) only with `force`, and then whole: the new folder is written aside and renamed
    into place, so nothing of the old one survives beside the new files. A folder that holds
    something else is never replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if (out / marker).exists() and not force:
        raise ConfigError(f"{out} already holds a {what} ({marker}); choose another --out "
                          "or pass --force to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).exists():
        raise ConfigError(f"--out {out} exists and does not hold a {what}; --force replaces a "
                          f"{what} only: choose another --out")
    staging = staging_dir(out)
    try:
        write(staging)
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def write_run(out: Path, model: nn.Module, cfg: ModelConfig, tokenizer: Any,
              source: dict[str, Any], final: Path | None = None) -> Path:
    """An ordinary lmforge run folder: config.yaml, model_config.json, tokenizer.json,
    model.safetensors (and source.json saying where it came from). `final`: where the folder
    will live when `out` is a staging folder (the config names the tokenizer there)."""
    tokenizer.save(out / TOKENIZER)
    save_weights(model, out / WEIGHTS, metadata={"converted_from": str(source.get("path", ""))})
    # the tokenizer is fixed by the checkpoint: further training on new text reuses it
    run_cfg = Config(model=cfg, tokenizer=TokenizerConfig(kind="wordpiece" if cfg.arch == "bert" else
                                                          "bpe", path=str((final or out) / TOKENIZER)),
                     out=str(final or out))
    if "tokenizer_config" in source:  # an LLM's chat template, BOS/EOS rules (contract: LLM_GROUP.md)
        atomic_write_text(out / "tokenizer_config.json",
                          json.dumps(source.pop("tokenizer_config"), indent=2, ensure_ascii=False))
    save_config(run_cfg, out / CONFIG)
    atomic_write_text(out / SOURCE, json.dumps(source, indent=2))
    # written last: a conversion that failed half-way leaves no model_config.json, so it is
    # neither loadable as a run nor refused as "already holds a run" when retried
    atomic_write_text(out / MODEL_CONFIG, cfg.to_json())
    return out


def import_folder(folder: str | Path, family: Any) -> tuple[nn.Module, Any, ModelConfig, dict]:
    """Build an lmforge model + tokenizer from a HF folder with `family` (hf_gpt2 / hf_bert).

    Returns (model, tokenizer, model config, provenance dict); nothing is written.
    """
    from ..tokenizers import load_tokenizer

    folder = Path(folder)
    hf_config = read_hf_config(folder)
    source = str(folder / "config.json")
    cfg = family.config_from_hf(hf_config, source)
    state, weights_path = read_hf_weights(folder, getattr(family, "SAFETENSORS_ONLY", False))
    state = family.normalise_keys(state, cfg)
    tokenizer = load_tokenizer(folder)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ConfigError(f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens but "
                          f"config.json vocab_size is {cfg.vocab_size}")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else hf_config.get("pad_token_id")
    if pad is None:
        pad = tokenizer.eos_id
    cfg.pad_id = int(pad) if pad is not None else 0
    model = build_model(cfg)
    expected = family.to_hf_state(model.state_dict(), cfg)
    fresh = check_tensors(state, expected, weights_path, family.OPTIONAL)
    load_exact(model, family.from_hf_state(state, cfg), family.OPTIONAL_OURS if fresh else ())
    model.eval()
    info = {"format": "huggingface", "family": family.FAMILY, "path": str(folder.resolve()),
            "weights": weights_path.name, "architectures": hf_config.get("architectures"),
            "fresh_tensors": fresh}
    if cfg.arch == "llama":
        from ..tokenizers.hf import read_chat_template, read_hints, run_tokenizer_config

        template = read_chat_template(folder, read_hints(folder)[1])
        info["tokenizer_config"] = run_tokenizer_config(tokenizer, template, cfg.max_len)
    return model, tokenizer, cfg, info


def from_hf_folder(folder: str | Path, out: str | Path, family: Any, force: bool = False,
                   log: Any = print) -> Path:
    """Convert a HF folder of `family` into the run directory `out`."""
    out = Path(out)
    if same_path(out, folder):
        raise ConfigError(f"--out {out} is the checkpoint folder being converted; no command "
                          "writes over its own input: choose another --out")
    if holds_run(out) and not force:  # refused before the (slow) import
        raise ConfigError(f"{out} already holds a run ({MODEL_CONFIG}); choose another --out "
                          "or pass --force to replace it")
    model, tokenizer, cfg, info = import_folder(folder, family)
    # --force replaces the run whole: no trainer_state.pt or best.safetensors of the old run
    # survives beside the new weights
    write_folder_whole(out, "run", MODEL_CONFIG, force,
                       lambda staging: write_run(staging, model, cfg, tokenizer, info, final=out))
    if info["fresh_tensors"]:
        log(f"note: {len(info['fresh_tensors'])} tensors are not in the checkpoint and start "
            f"fresh ({family.describe_fresh(info['fresh_tensors'])}); fine-tune before relying on them")
    return out


# --------------------------------------------------------------------------- writing HF format


def tokenizer_config(tokenizer: Any, max_len: int) -> dict[str, Any]:
    """tokenizer_config.json for the exported tokenizer.json (loaded verbatim by transformers)."""
    data: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len,
                            "clean_up_tokenization_spaces": False}
    for role in ("bos", "eos", "unk", "pad", "cls", "sep", "mask"):
        token = tokenizer.specials.get(role)
        if token is not None:
            data[f"{role}_token"] = token
    return data


def prompt_tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """tokenizer.json for a causal LM export: encoding a prompt adds no <bos>/<eos>.

    lmforge's tokenizers wrap text in <bos> ... <eos> only when asked (`add_special=True`),
    but transformers always applies the post-processor; a prompt ending in <eos> would make
    `generate` / `pipeline` start a new document instead of continuing it. GPT-2's own
    tokenizer adds nothing either. Other post-processing (byte-level offsets) is kept.
    """
    data = tokenizer.to_json()
    post = data.get("post_processor")
    if post and post.get("type") == "TemplateProcessing":
        data["post_processor"] = None
    elif post and post.get("type") == "Sequence":
        kept = [p for p in post["processors"] if p.get("type") != "TemplateProcessing"]
        data["post_processor"] = {**post, "processors": kept} if kept else None
    return data


def write_hf_folder(out: Path, hf_config: dict[str, Any], state: dict[str, torch.Tensor],
                    tokenizer: Any, max_len: int, tok_config: dict[str, Any] | None = None) -> Path:
    """config.json, model.safetensors and tokenizer files, as `save_pretrained` lays them out."""
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    tmp = out / (SAFE_WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})  # transformers checks "format"
    as_umask_allows(tmp)  # safetensors creates 0600 files
    tmp.replace(out / SAFE_WEIGHTS)
    if hf_config.get("model_type") == "gpt2":  # BERT keeps [CLS] ... [SEP], as BERT users expect
        atomic_write_text(out / "tokenizer.json",
                          json.dumps(prompt_tokenizer_json(tokenizer), ensure_ascii=False, indent=2))
    else:
        tokenizer.save(out / "tokenizer.json")
    atomic_write_text(out / "tokenizer_config.json",
                      json.dumps(tok_config or tokenizer_config(tokenizer, max_len), indent=2,
                                 ensure_ascii=False))
    atomic_write_text(out / "config.json", json.dumps(hf_config, indent=2, sort_keys=True))
    return out
