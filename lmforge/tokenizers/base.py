"""The lmforge `Tokenizer`: a thin wrapper over a Hugging Face `tokenizers.Tokenizer` (Rust).

Every kind (char, word, bpe, wordpiece, hf) is one `tokenizers.Tokenizer` saved as one
`tokenizer.json`; the wrapper adds the lmforge kind, queryable special-token ids, an encode that
never adds special tokens, and atomic save/load.

    tok = Tokenizer.load("runs/s1/tokenizer.json")
    ids = tok.encode("ROMEO:")          # [31, 28, 26, 28, 26, 13] for a char tokenizer
    tok.decode(ids)                     # "ROMEO:"

The lmforge kind is stored inside the JSON as `model.lmforge` (the `tokenizers` library ignores
unknown keys there), so the file still loads with `tokenizers.Tokenizer.from_file` and
`transformers.PreTrainedTokenizerFast(tokenizer_file=...)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import tokenizers

from ..config import ConfigError
from ..files import as_umask_allows

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]  # ids 0, 1, 2, 3 in every lmforge-trained tokenizer
ENCODER_SPECIAL_TOKENS = ["[CLS]", "[SEP]", "[MASK]"]  # ids 4, 5, 6 for wordpiece (and when asked)
# readers of the formats that are not a tokenizer.json (a folder, vocab.txt, vocab.json):
# reader(path) -> Tokenizer, or None when the path is not theirs. hf.py registers them (the
# package imports it): it builds on this class, so this module cannot import it.
FORMAT_READERS: list[Callable[[Path], "Tokenizer | None"]] = []
KINDS = ("char", "word", "bpe", "wordpiece")  # kinds lmforge trains; "hf" = anything imported
FORMAT_VERSION = 1

# role -> token strings that play it, first match wins (lmforge names first, then BERT, GPT-2, T5,
# Llama conventions). Used for imported ("hf") tokenizers; lmforge kinds hit the first entry.
SPECIAL_CANDIDATES: dict[str, tuple[str, ...]] = {
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "bos": ("<bos>", "<s>", "[BOS]", "<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>"),
    "eos": ("<eos>", "</s>", "[EOS]", "<|end_of_text|>", "<|endoftext|>"),
    "cls": ("[CLS]", "<cls>"),
    "sep": ("[SEP]", "<sep>"),
    "mask": ("[MASK]", "<mask>"),
}
ROLES = tuple(SPECIAL_CANDIDATES)


def _canonical(data: dict[str, Any]) -> str:
    """Key-sorted compact JSON, so equal tokenizers serialise to equal text."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        as_umask_allows(tmp)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def discover_specials(
    backend: tokenizers.Tokenizer, hints: dict[str, str | None] | None = None
) -> dict[str, str | None]:
    """Find the token string of each special role (pad, unk, bos, ...) in a vocabulary.

    `hints` (e.g. from a Hugging Face `tokenizer_config.json`) win over the name candidates.
    """
    vocab = backend.get_vocab(with_added_tokens=True)
    found: dict[str, str | None] = {}
    for role, names in SPECIAL_CANDIDATES.items():
        hint = (hints or {}).get(role)
        if hint is not None and hint in vocab:
            found[role] = hint
            continue
        found[role] = next((n for n in names if n in vocab), None)
    if found["unk"] is None:  # a model may name its unk token without listing it as a special
        unk = getattr(backend.model, "unk_token", None)
        found["unk"] = unk if unk in vocab else None
    return found


class Tokenizer:
    """A `tokenizers.Tokenizer` plus its lmforge kind and named special tokens."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        kind: str,
        specials: dict[str, str | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        if kind not in (*KINDS, "hf"):
            raise ConfigError(f"tokenizer kind {kind!r} is not one of {', '.join((*KINDS, 'hf'))}")
        self.kind = kind
        self.backend = backend
        self.specials = dict(specials) if specials is not None else discover_specials(backend)
        self.options = dict(options or {})

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        """Number of ids, special and added tokens included (the embedding table size)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def _role_id(self, role: str) -> int | None:
        token = self.specials.get(role)
        return None if token is None else self.backend.token_to_id(token)

    pad_id = property(lambda self: self._role_id("pad"), doc="Id of the padding token, or None.")
    unk_id = property(lambda self: self._role_id("unk"), doc="Id of the unknown token, or None.")
    bos_id = property(lambda self: self._role_id("bos"), doc="Id of begin-of-sequence, or None.")
    eos_id = property(lambda self: self._role_id("eos"), doc="Id of end-of-sequence, or None.")
    cls_id = property(lambda self: self._role_id("cls"), doc="Id of [CLS], or None.")
    sep_id = property(lambda self: self._role_id("sep"), doc="Id of [SEP], or None.")
    mask_id = property(lambda self: self._role_id("mask"), doc="Id of [MASK], or None.")

    @property
    def special_ids(self) -> dict[str, int]:
        """Role -> id for every special token this tokenizer has, e.g. {"pad": 0, "eos": 3}."""
        ids = {role: self._role_id(role) for role in ROLES}
        return {role: i for role, i in ids.items() if i is not None}

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (None when absent)."""
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        """Token string of an id (None when out of range)."""
        return self.backend.id_to_token(int(i))

    def get_vocab(self) -> dict[str, int]:
        """Token string -> id, added tokens included."""
        return self.backend.get_vocab(with_added_tokens=True)

    # ------------------------------------------------------------------ encode / decode

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of `text`; no bos/eos/[CLS]/[SEP] unless `add_special` (then the post-processor's)."""
        return self.backend.encode(text, add_special_tokens=add_special).ids

    def encode_batch(self, texts: Sequence[str], add_special: bool = False) -> list[list[int]]:
        """Token ids of many texts at once, in parallel in Rust."""
        # encode_batch_fast (tokenizers >= 0.21) skips computing character offsets
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        encodings = encode(list(texts), add_special_tokens=add_special)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int] | Any, skip_special: bool = True) -> str:
        """Text of a 1-D id sequence (list, numpy array or torch tensor)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self._postprocess(self.backend.decode(ids, skip_special_tokens=skip_special))

    def decode_batch(self, batch: Sequence[Sequence[int]] | Any, skip_special: bool = True) -> list[str]:
        """Texts of a batch of id sequences (list of lists, or a 2-D array/tensor)."""
        rows = batch.tolist() if hasattr(batch, "tolist") else [
            r.tolist() if hasattr(r, "tolist") else list(r) for r in batch
        ]
        texts = self.backend.decode_batch(rows, skip_special_tokens=skip_special)
        return [self._postprocess(t) for t in texts]

    def _postprocess(self, text: str) -> str:
        # A WordLevel model has no decoder that knows where spaces were: `tokenizers` joins words
        # with single spaces. Undo the most visible artefacts: spaces around newlines, before
        # closing punctuation and after opening brackets.
        if self.kind != "word":
            return text
        text = re.sub(r" ?\n ?", "\n", text)
        text = re.sub(r" ([.,;:!?)\]}])", r"\1", text)
        return re.sub(r"([(\[{]) ", r"\1", text)

    # ------------------------------------------------------------------ save / load

    def to_json(self) -> dict[str, Any]:
        """The `tokenizer.json` content, with the lmforge marker in `model.lmforge`."""
        data = json.loads(self.backend.to_str())
        data["model"]["lmforge"] = {
            "kind": self.kind,
            "version": FORMAT_VERSION,
            "specials": self.specials,
            "options": self.options,
        }
        return data

    def save(self, path: str | Path) -> Path:
        """Write one `tokenizer.json` atomically; a folder (an existing one, or a new path without
        a suffix) gets `folder/tokenizer.json`. Returns the file written."""
        path = Path(path)
        if path.is_dir() or (not path.suffix and not path.exists()):
            path = path / "tokenizer.json"
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False, indent=2))
        return path

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "tokenizer.json") -> "Tokenizer":
        """Build from parsed `tokenizer.json` content (lmforge-made or Hugging Face-made)."""
        data = json.loads(json.dumps(data))  # private copy: the marker is popped below
        model = data.get("model")
        if not isinstance(model, dict):
            raise ConfigError(f"{source}: not a tokenizer.json (no 'model' section)")
        marker = model.pop("lmforge", None)
        try:
            backend = tokenizers.Tokenizer.from_str(json.dumps(data))
        except Exception as err:  # the Rust error text names the bad field
            raise ConfigError(f"{source}: not a valid tokenizer.json ({err})") from None
        if isinstance(marker, dict) and marker.get("kind") in (*KINDS, "hf"):
            return cls(backend, marker["kind"], marker.get("specials"), marker.get("options"))
        return cls(backend, "hf", discover_specials(backend))

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Load a tokenizer.json file, or a folder holding tokenizer.json, vocab.txt (BERT
        WordPiece) or vocab.json + merges.txt (GPT-2 byte-level BPE)."""
        path = Path(path)
        for reader in FORMAT_READERS:  # folders and vocab files (hf.py)
            tokenizer = reader(path)
            if tokenizer is not None:
                return tokenizer
        if not path.is_file():
            raise ConfigError(f"tokenizer {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: not a valid tokenizer.json ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not a tokenizer.json (top level is not an object)")
        return cls.from_json(data, source=str(path))

    def fingerprint(self) -> str:
        """Stable sha256 (hex) of the serialised tokenizer: equal tokenizers, equal fingerprints."""
        return hashlib.sha256(_canonical(self.to_json()).encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, specials={self.special_ids})"

    def __len__(self) -> int:
        return self.vocab_size


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer: a tokenizer.json file or a folder (see `Tokenizer.load`)."""
    return Tokenizer.load(path)


def check_texts(texts: Iterable[str] | str) -> Iterable[str]:
    """Reject a bare string where an iterable of texts is expected (it would iterate characters)."""
    if isinstance(texts, str):
        raise ConfigError("texts must be an iterable of strings, not one string (wrap it in a list)")
    return texts
