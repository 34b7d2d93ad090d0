"""Load tokenizers from Hugging Face folders: tokenizer.json, BERT vocab.txt, GPT-2 vocab.json + merges.txt.

Everything imported gets kind "hf": its special-token ids are discovered by name (and from
`tokenizer_config.json` / `special_tokens_map.json` when the folder has them), not fixed at 0-3.
The pipelines rebuilt from vocab files mirror `transformers`' BertTokenizerFast and
GPT2TokenizerFast, so ids match theirs.

What `tokenizer(text)` adds is decided as transformers 5 decides it for a tokenizer.json: by
the file's post-processor alone (tokenizer_config.json's `add_bos_token` / `add_eos_token`
are dropped when a tokenizer.json exists). `apply_tokenizer_config` takes the special-token
names from the config and records in `options["add_bos"]` / `options["add_eos"]` whether
encoding adds them (generate starts prompts with BOS accordingly). A tokenizer built from
another format (GGUF) states its rule with `set_bos_eos`, which writes the post-processor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors

from ..config import ConfigError
from .base import FORMAT_READERS, ROLES, Tokenizer, discover_specials
from .train import wordpiece_pipeline

HINT_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def read_hints(folder: Path) -> tuple[dict[str, str | None], dict[str, Any]]:
    """Special-token names (role -> token) and the raw tokenizer_config.json of a HF folder."""
    hints: dict[str, str | None] = {}
    config: dict[str, Any] = {}
    for name in reversed(HINT_FILES):  # tokenizer_config.json read last, so it wins
        path = folder / name
        if not path.is_file():
            continue
        data = _read_json(path)
        if not isinstance(data, dict):
            continue
        if name == "tokenizer_config.json":
            config = data
        for role in ROLES:
            value = data.get(f"{role}_token")
            if isinstance(value, dict):  # serialised AddedToken
                value = value.get("content")
            if isinstance(value, str):
                hints[role] = value
    return hints, config


def _register_specials(backend: tokenizers.Tokenizer, tokens: list[str]) -> None:
    """Mark vocabulary entries as special (matched whole in text, dropped by skip_special decode)."""
    present = [t for t in dict.fromkeys(tokens) if t is not None and backend.token_to_id(t) is not None]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in present])


def _bert_lowercase(vocab_file: Path, config: dict[str, Any]) -> bool:
    # tokenizer_config.json says so when present; otherwise an uncased vocabulary has no capital
    # letters outside bracketed special tokens (bert-base-uncased), a cased one has many.
    if "do_lower_case" in config:
        return bool(config["do_lower_case"])
    words = vocab_file.read_text(encoding="utf-8").splitlines()
    upper = sum(1 for w in words if not (w.startswith("[") and w.endswith("]")) and w != w.lower())
    return upper == 0


def load_bert_vocab(folder: Path) -> Tokenizer:
    """A BERT WordPiece tokenizer from `folder/vocab.txt` (one token per line, id = line number)."""
    vocab_file = folder / "vocab.txt"
    hints, config = read_hints(folder)
    unk = hints.get("unk", "[UNK]")
    try:
        model = models.WordPiece.from_file(str(vocab_file), unk_token=unk, continuing_subword_prefix="##")
    except Exception as err:
        raise ConfigError(f"{vocab_file}: not a WordPiece vocab.txt ({err})") from None
    backend = tokenizers.Tokenizer(model)
    lowercase = _bert_lowercase(vocab_file, config)
    specials = discover_specials(backend, hints)
    _register_specials(backend, list(specials.values()))
    wordpiece_pipeline(backend, lowercase, specials["cls"] or "[CLS]", specials["sep"] or "[SEP]")
    return Tokenizer(backend, "hf", specials, {"lowercase": lowercase, "source": "vocab.txt"})


def load_gpt2_vocab(folder: Path) -> Tokenizer:
    """A GPT-2 byte-level BPE tokenizer from `folder/vocab.json` and `folder/merges.txt`."""
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if not merges_file.is_file():
        raise ConfigError(f"{folder}: has vocab.json but no merges.txt (a GPT-2 tokenizer needs both)")
    try:
        model = models.BPE.from_file(str(vocab_file), str(merges_file), fuse_unk=False)
    except Exception as err:
        raise ConfigError(f"{folder}: vocab.json / merges.txt are not a BPE vocabulary ({err})") from None
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    hints, _ = read_hints(folder)
    specials = discover_specials(backend, hints)
    _register_specials(backend, list(specials.values()))
    return Tokenizer(backend, "hf", specials, {"source": "vocab.json+merges.txt"})


def _record_bos_eos(tok: Tokenizer) -> Tokenizer:
    """options["add_bos"/"add_eos"]: does `encode(text, add_special=True)` wrap text in them?"""
    plain = tok.backend.encode("a", add_special_tokens=False).ids
    wrapped = tok.backend.encode("a", add_special_tokens=True).ids
    bos, eos = tok.bos_id, tok.eos_id
    tok.options["add_bos"] = bos is not None and wrapped[:1] == [bos] and plain[:1] != [bos]
    tok.options["add_eos"] = eos is not None and wrapped[-1:] == [eos] and plain[-1:] != [eos]
    return tok


def apply_tokenizer_config(tok: Tokenizer, hints: dict[str, str | None],
                           config: dict[str, Any]) -> Tokenizer:
    """Special tokens named by a HF folder's tokenizer_config.json / special_tokens_map.json,
    and the BOS/EOS rule of the tokenizer.json recorded in `tok.options` (module docstring)."""
    tok.specials = discover_specials(tok.backend, hints)
    return _record_bos_eos(tok)


def set_bos_eos(tok: Tokenizer, add_bos: bool, add_eos: bool = False) -> Tokenizer:
    """Make `encode(text, add_special=True)` give [bos] text [eos] as flagged (as transformers'
    `update_post_processor` does), e.g. from GGUF's tokenizer.ggml.add_bos_token. Byte-level
    offset trimming is kept out of it: it never changes ids."""
    parts = {"bos": tok.specials.get("bos") if add_bos else None,
             "eos": tok.specials.get("eos") if add_eos else None}
    for role, token in parts.items():
        if token is not None and tok.backend.token_to_id(token) is None:
            raise ConfigError(f"tokenizer has no {role} token {token!r} to add")
    bos = [f"{parts['bos']}:0"] if parts["bos"] else []
    eos = [f"{parts['eos']}:0"] if parts["eos"] else []
    single = " ".join(bos + ["$A:0"] + eos)
    pair = single + " " + " ".join([t.replace(":0", ":1") for t in bos] + ["$B:1"]
                                   + [t.replace(":0", ":1") for t in eos])
    tok.backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair,
        special_tokens=[(t, tok.backend.token_to_id(t)) for t in parts.values() if t])
    return _record_bos_eos(tok)


def read_chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    """The chat template of a HF folder: chat_template.jinja (transformers 5 saves it apart),
    else tokenizer_config.json's `chat_template` (a string, or named templates: "default")."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def run_tokenizer_config(tok: Tokenizer, chat_template: str | None, max_len: int) -> dict[str, Any]:
    """tokenizer_config.json of an imported LLM's run (transformers-compatible keys): the chat
    template, special-token strings and whether BOS / EOS are added."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": chat_template,
            "bos_token": tok.specials.get("bos"), "eos_token": tok.specials.get("eos"),
            "pad_token": tok.specials.get("pad"), "unk_token": tok.specials.get("unk"),
            "add_bos_token": bool(tok.options.get("add_bos", False)),
            "add_eos_token": bool(tok.options.get("add_eos", False)),
            "model_max_length": max_len, "clean_up_tokenization_spaces": False}


def load_folder(folder: Path) -> Tokenizer:
    """Load the tokenizer of a folder: tokenizer.json first, then vocab.txt, then vocab.json + merges.txt."""
    if (folder / "tokenizer.json").is_file():
        path = folder / "tokenizer.json"
        tok = Tokenizer.load(path)
        if tok.kind == "hf":  # a HF-made file: its config may name specials the names miss
            hints, config = read_hints(folder)
            if hints or config:
                apply_tokenizer_config(tok, hints, config)
        return tok
    if (folder / "vocab.txt").is_file():
        return load_bert_vocab(folder)
    if (folder / "vocab.json").is_file():
        return load_gpt2_vocab(folder)
    found = sorted(p.name for p in folder.iterdir())[:10]
    raise ConfigError(
        f"{folder}: no tokenizer found (has {', '.join(found) or 'nothing'}); expected tokenizer.json, "
        "vocab.txt (BERT WordPiece) or vocab.json + merges.txt (GPT-2 BPE)"
    )


def read_format(path: Path) -> Tokenizer | None:
    """A folder, a BERT vocab.txt or a GPT-2 vocab.json; None for anything else."""
    path = Path(path)
    if path.is_dir():
        return load_folder(path)
    if path.is_file() and path.name == "vocab.txt":
        return load_bert_vocab(path.parent)
    if path.is_file() and path.name == "vocab.json":
        return load_gpt2_vocab(path.parent)
    return None


FORMAT_READERS.append(read_format)
