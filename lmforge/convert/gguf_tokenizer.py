"""The tokenizer of a GGUF file as a Hugging Face `tokenizers` object, and back.

A GGUF has no tokenizer.json: it stores `tokenizer.ggml.*` metadata (llama.cpp's
gguf-py/gguf/constants.py `Keys.Tokenizer`): the tokens in id order, their types (1 normal,
2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), BPE merges or SentencePiece scores,
the special-token ids, whether BOS/EOS are added, and a pre-tokenizer *name* (`smollm`,
`llama-bpe`, `qwen2`, ...) that stands for the regex llama.cpp splits text with.

Two vocabulary models:
- `gpt2`: byte-level BPE with its merges (GPT-2, SmolLM, Llama 3, Qwen2);
- `llama`: SentencePiece-style BPE with byte fallback; the file has scores, not merges, so the
  merges are rebuilt from them: every split of a token into two vocabulary pieces, the
  token's score its priority (what transformers' LlamaConverter does for SentencePiece).
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from typing import Any, Callable, Mapping

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from ..chat.template import token_text
from ..config import ConfigError
from ..tokenizers import Tokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPECIAL_IDS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
               "pad": "padding_token_id"}

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _regex_then_bytes(pattern: str) -> Any:
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


# llama.cpp pre-tokenizer name -> the equivalent `tokenizers` pre-tokenizer (as the model's
# own tokenizer.json has it); the first name of each kind is what the writer puts in a file
PRE_TOKENIZERS: dict[str, Callable[[], Any]] = {
    "gpt-2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "smollm": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "llama-bpe": lambda: _regex_then_bytes(_LLAMA3_SPLIT),
    "qwen2": lambda: _regex_then_bytes(_QWEN2_SPLIT),
}
PRE_ALIASES = {"default": "gpt-2", "gpt2": "gpt-2", "llama3": "llama-bpe", "llama-v3": "llama-bpe",
               "smaug-bpe": "llama-bpe", "dbrx": "llama-bpe", "falcon3": "llama-bpe",
               "deepseek-r1-qwen": "qwen2", "megrez": "qwen2"}
IGNORE_MERGES = ("llama-bpe",)  # Llama 3 takes a word whole when the vocabulary has it


# --------------------------------------------------------------------------- GGUF -> tokenizers


def _sentencepiece_merges(tokens: list[str], scores: list[float], types: list[int],
                          vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Merges implied by a scored vocabulary: each token split every way into two vocabulary
    pieces; a merge's priority is the merged token's score (higher first).

    >>> _sentencepiece_merges(["a", "b", "ab"], [-1, -2, -0.5], [1, 1, 1], {"a": 0, "b": 1, "ab": 2})
    [('a', 'b')]
    """
    found = []
    for token, score, kind in zip(tokens, scores, types):
        if kind not in (NORMAL, USER_DEFINED):
            continue
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in vocab and right in vocab:
                found.append((score, vocab[left], vocab[right], left, right))
    found.sort(key=lambda m: (-m[0], m[1], m[2]))
    return [(left, right) for _, _, _, left, right in found]


@lru_cache(maxsize=1)
def _byte_table() -> tuple[str, ...]:
    """GPT-2's bytes_to_unicode: the character that spells each byte in a byte-level vocabulary
    (printable bytes spell themselves, the others 256 + n)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)}
    table, n = [], 0
    for b in range(256):
        table.append(chr(b) if b in printable else chr(256 + n))
        n += b not in printable
    return tuple(table)


def _bytes_spelling(token: str) -> str:
    """A token written in raw text, re-spelled in the byte-level alphabet.

    >>> _bytes_spelling("a b")
    'aĠb'
    """
    table = _byte_table()
    return "".join(table[b] for b in token.encode("utf-8"))


def _post_processor(backend: tokenizers.Tokenizer, bos: str | None, eos: str | None,
                    add_bos: bool, add_eos: bool, byte_level: bool) -> Any:
    """BOS/EOS added the way the model's tokenizer.json would (TemplateProcessing)."""
    head = [bos] if add_bos and bos else []
    tail = [eos] if add_eos and eos else []
    if not head and not tail:
        return processors.ByteLevel(trim_offsets=False) if byte_level else None
    single = " ".join([*head, "$A", *tail])
    pair = " ".join([single, *[f"{t}:1" for t in head], "$B:1", *[f"{t}:1" for t in tail]])
    return processors.TemplateProcessing(
        single=single, pair=pair,
        special_tokens=[(t, backend.token_to_id(t)) for t in dict.fromkeys(head + tail)])


def tokenizer_from_gguf(meta: Mapping[str, Any], source: str) -> tuple[Tokenizer, dict[str, Any]]:
    """(lmforge Tokenizer, transformers-style tokenizer_config dict) from GGUF metadata."""
    kind = meta.get("tokenizer.ggml.model")
    tokens = list(meta.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ConfigError(f"{source}: the GGUF has no tokenizer (no tokenizer.ggml.tokens)")
    types = list(meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    specials = {role: (tokens[i] if isinstance(i := meta.get(f"tokenizer.ggml.{key}"), int)
                       and 0 <= i < len(tokens) else None) for role, key in SPECIAL_IDS.items()}
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    if kind == "gpt2":
        alphabet = set(_byte_table())
        spelled = [t if types[i] in (CONTROL, USER_DEFINED) or set(t) <= alphabet
                   else _bytes_spelling(t) for i, t in enumerate(tokens)]
        vocab = {t: i for i, t in enumerate(spelled)}
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
        pre = str(meta.get("tokenizer.ggml.pre") or "default")
        name = PRE_ALIASES.get(pre, pre)
        if name not in PRE_TOKENIZERS:
            warnings.warn(f"{source}: pre-tokenizer {pre!r} is not known to lmforge; text is split "
                          f"the GPT-2 way (known: {', '.join(PRE_TOKENIZERS)})", stacklevel=2)
            name = "gpt-2"
        backend = tokenizers.Tokenizer(models.BPE(vocab, merges, fuse_unk=False,
                                                  ignore_merges=name in IGNORE_MERGES))
        backend.pre_tokenizer = PRE_TOKENIZERS[name]()
        if name == "qwen2":
            backend.normalizer = normalizers.NFC()  # as Qwen2's own tokenizer.json
        backend.decoder = decoders.ByteLevel()
    elif kind == "llama":
        vocab = {t: i for i, t in enumerate(tokens)}
        scores = list(meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens))
        merges = _sentencepiece_merges(tokens, scores, types, vocab)
        backend = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=specials["unk"],
                                                  fuse_unk=True, byte_fallback=True))
        prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
        backend.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first" if prefix else "never", split=False)
        steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        backend.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    else:
        raise ConfigError(f"{source}: tokenizer model {kind!r} is not supported "
                          f"(supported: gpt2 = byte-level BPE, llama = SentencePiece BPE)")
    # control tokens (and the named specials) are matched whole and never split
    control = [t for t, k in zip(tokens, types) if k == CONTROL]
    control += [t for t in specials.values() if t is not None and t not in control]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    user = [t for t, k in zip(tokens, types) if k == USER_DEFINED]
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    backend.post_processor = _post_processor(backend, specials["bos"], specials["eos"],
                                             add_bos, add_eos, kind == "gpt2")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              **{f"{role}_token": specials[role] for role in ("bos", "eos", "unk", "pad")},
              "add_bos_token": add_bos, "add_eos_token": add_eos}
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        config["chat_template"] = template
    tok = Tokenizer(backend, "hf", {**dict.fromkeys(("cls", "sep", "mask")), **specials},
                    {"source": "gguf", "add_bos": add_bos, "add_eos": add_eos})
    return tok, config


# --------------------------------------------------------------------------- tokenizers -> GGUF


def _pre_name(pre: Any) -> str:
    """llama.cpp's name for a tokenizer.json pre-tokenizer section ('gpt-2' when unknown)."""
    def clean(node: Any) -> Any:  # offsets trimming does not change ids
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if k != "trim_offsets"}
        return [clean(v) for v in node] if isinstance(node, list) else node

    for name, build in PRE_TOKENIZERS.items():
        probe = tokenizers.Tokenizer(models.BPE())
        probe.pre_tokenizer = build()
        if clean(json.loads(probe.to_str())["pre_tokenizer"]) == clean(pre):
            return name
    warnings.warn("the tokenizer's pre-tokenizer has no llama.cpp name; GGUF readers will split "
                  "text the GPT-2 way", stacklevel=3)
    return "gpt-2"


def gguf_vocab(tok: Tokenizer, config: Mapping[str, Any], n_vocab: int = 0) -> dict[str, Any]:
    """The `tokenizer.*` metadata (key -> value) that describes `tok` in a GGUF file; the
    token list is padded with unused `[PADn]` entries up to `n_vocab` (the embedding rows),
    since llama.cpp expects one token per row."""
    data = json.loads(tok.backend.to_str())
    model = data["model"]
    if model.get("type") != "BPE":
        raise ConfigError(f"a {model.get('type')} tokenizer cannot be written to GGUF (byte-level "
                          f"BPE or SentencePiece-style BPE only)")
    size = max(tok.vocab_size, n_vocab)
    tokens = [tok.id_to_token(i) for i in range(size)]
    types = [NORMAL if t is not None else UNUSED for t in tokens]
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    for added in data.get("added_tokens") or []:
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    byte_level = "ByteLevel" in json.dumps(data.get("pre_tokenizer")) or \
        "ByteLevel" in json.dumps(data.get("decoder"))
    meta: dict[str, Any] = {}
    if byte_level:
        meta["tokenizer.ggml.model"] = "gpt2"
        meta["tokenizer.ggml.pre"] = _pre_name(data.get("pre_tokenizer"))
        meta["tokenizer.ggml.merges"] = [m if isinstance(m, str) else " ".join(m)
                                         for m in model.get("merges") or []]
    elif model.get("byte_fallback"):
        meta["tokenizer.ggml.model"] = "llama"
        # SentencePiece priorities: earlier ids were merged earlier (llama.cpp's LlamaHfVocab)
        meta["tokenizer.ggml.scores"] = [float(-i) if k == NORMAL else 0.0 for i, k in enumerate(types)]
        for i, t in enumerate(tokens):
            if types[i] == NORMAL and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                types[i] = BYTE
        pre = json.dumps(data.get("pre_tokenizer"))
        meta["tokenizer.ggml.add_space_prefix"] = '"never"' not in pre
    else:
        raise ConfigError("this tokenizer cannot be written to GGUF: neither byte-level BPE nor "
                          "SentencePiece-style BPE with byte fallback")
    meta["tokenizer.ggml.tokens"] = tokens
    meta["tokenizer.ggml.token_type"] = types
    for role, key in SPECIAL_IDS.items():
        text = token_text(config.get(f"{role}_token")) or tok.specials.get(role)
        if text is not None and tok.token_to_id(text) is not None:
            meta[f"tokenizer.ggml.{key}"] = tok.token_to_id(text)
            if types[tok.token_to_id(text)] == NORMAL and role == "unk":
                types[tok.token_to_id(text)] = UNKNOWN
    meta["tokenizer.ggml.add_bos_token"] = bool(config.get("add_bos_token", False))
    meta["tokenizer.ggml.add_eos_token"] = bool(config.get("add_eos_token", False))
    if isinstance(config.get("chat_template"), str):
        meta["tokenizer.chat_template"] = config["chat_template"]
    return meta
