"""Text corpora -> one cached array of token ids on disk, split into train and val.

    files = resolve_corpus_files("my_texts/")          # a file, folder, glob, or "" (bundled)
    corpus = tokenize_corpus(files, tokenizer, val_fraction=0.1)
    corpus.train, corpus.val                            # 1-D np.memmap (uint16 or uint32)

Reading is streamed: a .txt file is decoded and tokenized in bounded chunks, so memory is set
by the chunk size, never by the corpus. Each document ends with <eos> (a .txt file is one
document; a .jsonl line is one). The result is cached under a key made of the files' bytes, the
tokenizer's fingerprint and the options, so a second run reads it back instead of tokenizing.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..cache import cache_root
from ..config import ConfigError
from ..io import json_line

if TYPE_CHECKING:
    from ..tokenizers import Tokenizer

BUNDLED_CORPUS = Path(__file__).resolve().parent.parent / "assets" / "tinyshakespeare.txt"
CORPUS_SUFFIXES = (".txt", ".md", ".jsonl")  # what a folder contributes
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CACHE_VERSION = 1  # bump when the cache layout or tokenization rules change
ENCODE_CHARS = 1 << 16  # piece size fed to the tokenizer (small pieces parallelise well in Rust)
BATCH_CHARS = 1 << 20  # characters per encode_batch call: bounds memory while tokenizing


# --------------------------------------------------------------------------- finding files


def resolve_corpus_files(path: str | Path) -> list[Path]:
    """The files of a corpus: a file, a folder (its *.txt, *.md, *.jsonl, recursively, sorted),
    a glob, or "" for the bundled Tiny Shakespeare."""
    text = str(path)
    if text == "":
        return [BUNDLED_CORPUS]
    p = Path(text).expanduser()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(
            f for f in p.rglob("*")
            if f.is_file() and f.suffix.lower() in CORPUS_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(p).parts)  # skip hidden/caches
        )
        if not files:
            raise ConfigError(f"data.path {text!r}: folder has no .txt, .md or .jsonl files")
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(os.path.expanduser(text), recursive=True) if Path(f).is_file())
        if not files:
            raise ConfigError(f"data.path {text!r}: the glob matches no files")
    else:
        raise ConfigError(f"data.path {text!r} does not exist")
    if all(f.stat().st_size == 0 for f in files):
        raise ConfigError(f"data.path {text!r}: the corpus is empty ({len(files)} file(s), 0 bytes)")
    return files


def corpus_split(path: str | Path, split: str | None) -> str:
    """`--data DIR --split NAME`: the split's file (NAME.txt, NAME.md, NAME.jsonl) or folder
    (NAME/) inside DIR; `path` itself when no split is named or `path` is not a folder."""
    p = Path(path)
    if not split or not p.is_dir():
        return str(path)
    for candidate in [p / f"{split}{suffix}" for suffix in CORPUS_SUFFIXES] + [p / split]:
        if candidate.exists():
            return str(candidate)
    raise ConfigError(f"{p}: no {split} split ({split}.txt, {split}.jsonl or a {split}/ folder)")


# --------------------------------------------------------------------------- reading documents


def cut_point(text: str, limit: int) -> int:
    """Where to cut `text` so the head has at most `limit` chars: after a newline, else after
    whitespace, else at `limit` (only in the last half, so pieces stay large).

    >>> cut_point("ab\\ncd ef", 7)
    3
    """
    if len(text) <= limit:
        return len(text)
    for sep in ("\n", " ", "\t"):
        i = text.rfind(sep, limit // 2, limit)
        if i >= 0:
            return i + 1
    return limit


def _undecodable(path: Path, offset: int) -> ConfigError:
    return ConfigError(
        f"{path}: not valid UTF-8 at byte offset {offset}; fix the file or set data.errors=replace"
    )


def _text_pieces(path: Path, errors: str, chunk_chars: int) -> Iterator[str]:
    """Decode a text file incrementally and yield pieces of at most `chunk_chars` characters."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    consumed = 0  # bytes handed to the decoder so far
    buf = ""
    first = True
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_chars)
            pending = len(decoder.getstate()[0])  # bytes of a split character held back
            try:
                buf += decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:  # err.start counts from the held-back bytes
                raise _undecodable(path, consumed - pending + err.start) from None
            consumed += len(raw)
            if first and buf:
                buf, first = buf.removeprefix("\ufeff"), False  # a UTF-8 byte-order mark is not text
            while len(buf) > chunk_chars:  # keep a tail: the next read may complete its line
                cut = cut_point(buf, chunk_chars)
                yield buf[:cut]
                buf = buf[cut:]
            if not raw:
                break
    if buf:
        yield buf


def _jsonl_documents(path: Path, text_field: str, errors: str) -> Iterator[str]:
    """One document per non-blank line: the line's `text_field` string."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8", errors)
            except UnicodeDecodeError as err:
                raise _undecodable(path, offset + err.start) from None
            offset += len(raw)
            if not line.strip():
                continue
            record = json_line(path, lineno, line, f"an object with a {text_field!r} field")
            if text_field not in record:
                has = ", ".join(map(repr, record))
                raise ConfigError(
                    f"{path}:{lineno}: no field {text_field!r} (has {has or 'no fields'}); set data.text_field"
                )
            value = record[text_field]
            if not isinstance(value, str):
                raise ConfigError(
                    f"{path}:{lineno}: field {text_field!r} must be a string, got {type(value).__name__}"
                )
            yield value


def iter_pieces(
    files: list[Path], text_field: str = "text", errors: str = "strict", chunk_chars: int = 1 << 20
) -> Iterator[tuple[str, bool]]:
    """(text, is_last_piece_of_its_document) for every bounded piece of every document."""
    if errors not in ("strict", "replace"):
        raise ConfigError(f"data.errors must be strict or replace, got {errors!r}")
    if chunk_chars <= 0:
        raise ConfigError(f"chunk_chars must be positive, got {chunk_chars}")
    for path in map(Path, files):
        if not path.is_file():
            raise ConfigError(f"corpus file {str(path)!r} does not exist")
        if path.suffix.lower() in JSONL_SUFFIXES:
            docs: Iterator[str] = _jsonl_documents(path, text_field, errors)
        else:
            docs = iter([_text_pieces(path, errors, chunk_chars)])  # the whole file is one document
        for doc in docs:
            pieces = _split(doc, chunk_chars) if isinstance(doc, str) else doc
            prev = None
            for piece in pieces:  # hold one back to know which piece is last
                if prev is not None:
                    yield prev, False
                prev = piece
            if prev is not None:
                yield prev, True


def _split(doc: str, chunk_chars: int) -> Iterator[str]:
    """A long JSONL document as pieces of at most `chunk_chars`."""
    while doc:
        cut = cut_point(doc, chunk_chars)
        yield doc[:cut]
        doc = doc[cut:]


def iter_documents(
    files: list[Path], text_field: str = "text", errors: str = "strict", chunk_chars: int = 1 << 20
) -> Iterator[str]:
    """Text of every document, a .txt file in pieces of at most `chunk_chars` characters (cut at
    a newline or space where possible); a .jsonl file gives one document per line's `text_field`.

    Non-UTF-8 bytes raise ConfigError naming the file and byte offset (errors="strict"), or
    become U+FFFD (errors="replace").
    """
    for piece, _ in iter_pieces(files, text_field, errors, chunk_chars):
        yield piece


def corpus_texts_for_training(
    files: list[Path], text_field: str = "text", errors: str = "strict", max_chars: int | None = None
) -> Iterator[str]:
    """Texts to train a tokenizer on: the corpus pieces, stopping after `max_chars` characters."""
    left = max_chars if max_chars is not None else -1
    for piece in iter_documents(files, text_field, errors, chunk_chars=ENCODE_CHARS):
        if left == 0:
            return
        if left > 0:
            piece = piece[:left]
            left -= len(piece)
        yield piece


# --------------------------------------------------------------------------- tokenizing + cache


@dataclass
class TokenizedCorpus:
    """A corpus as token ids: `train` then `val`, both 1-D read-only views of one memmap file."""

    train: np.ndarray
    val: np.ndarray
    path: Path  # the cache folder (tokens.bin + meta.json)
    meta: dict = field(default_factory=dict)  # n_tokens, n_train, n_val, dtype, files, ...; from_cache

    @property
    def from_cache(self) -> bool:
        """True when the tokens were read back from the cache, not tokenized in this call."""
        return bool(self.meta.get("from_cache"))


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def default_cache_dir() -> Path:
    """$LMFORGE_CACHE/corpus, or ~/.cache/lmforge/corpus."""
    return cache_root() / "corpus"


def corpus_key(
    files: list[Path], tokenizer: "Tokenizer", text_field: str, errors: str, val_fraction: float
) -> str:
    """sha256 of the files' bytes (in order), the tokenizer fingerprint and the options."""
    h = hashlib.sha256(f"lmforge-corpus-v{CACHE_VERSION}\0".encode())
    for path in map(Path, files):
        # the suffix decides how a file is parsed; the size separates one file's bytes from the next
        h.update(f"{path.suffix.lower()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    h.update(tokenizer.fingerprint().encode())
    h.update(json.dumps([text_field, errors, float(val_fraction)]).encode())
    return h.hexdigest()


def _open(folder: Path, meta: dict, from_cache: bool) -> TokenizedCorpus:
    n, n_train = meta["n_tokens"], meta["n_train"]
    tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(n,))
    return TokenizedCorpus(tokens[:n_train], tokens[n_train:], folder, {**meta, "from_cache": from_cache})


def _read_cached(folder: Path) -> dict | None:
    """The meta of a complete cache entry, or None (absent or damaged: then it is rebuilt)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        size = (folder / "tokens.bin").stat().st_size
    except (OSError, ValueError):
        return None
    if size != meta.get("n_tokens", -1) * np.dtype(meta.get("dtype", "uint8")).itemsize:
        return None
    return meta


def _write_tokens(
    out, files, tokenizer, dtype, text_field, errors, progress
) -> tuple[int, int]:
    """Tokenize every piece in batches and append the ids to `out`; returns (n_tokens, n_docs)."""
    sep = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
    sep_arr = np.array([] if sep is None else [sep], dtype=dtype)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(Path(f).stat().st_size for f in files)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing")
    n_tokens = n_docs = 0
    batch: list[str] = []
    ends: list[bool] = []
    chars = 0

    def flush() -> None:
        nonlocal n_tokens, n_docs, chars
        arrays = []
        for ids, end in zip(tokenizer.encode_batch(batch), ends):
            arrays.append(np.asarray(ids, dtype=dtype))
            if end:  # <eos> after each document, so windows can tell documents apart
                arrays.append(sep_arr)
                n_docs += 1
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
        flat.tofile(out)
        n_tokens += flat.size
        if bar is not None:
            bar.update(sum(len(t.encode("utf-8")) for t in batch))
        batch.clear()
        ends.clear()
        chars = 0

    for piece, end in iter_pieces(files, text_field, errors, chunk_chars=ENCODE_CHARS):
        batch.append(piece)
        ends.append(end)
        chars += len(piece)
        if chars >= BATCH_CHARS:
            flush()
    flush()
    if bar is not None:
        bar.close()
    return n_tokens, n_docs


def tokenize_corpus(
    files: list[Path],
    tokenizer: "Tokenizer",
    val_fraction: float = 0.1,
    cache_dir: str | Path | None = None,
    text_field: str = "text",
    errors: str = "strict",
    progress: bool = False,
) -> TokenizedCorpus:
    """Tokenize `files` into one cached token array (each document followed by <eos>); the first
    (1 - val_fraction) of the tokens are `train`, the rest `val`.

    The cache lives in `cache_dir/<key>` (default ~/.cache/lmforge/corpus/<key>); it is written
    in a temp folder and renamed into place, so an interrupted run never leaves half an entry.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    if errors not in ("strict", "replace"):
        raise ConfigError(f"data.errors must be strict or replace, got {errors!r}")
    files = [Path(f) for f in files]
    for f in files:
        if not f.is_file():
            raise ConfigError(f"corpus file {str(f)!r} does not exist")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = corpus_key(files, tokenizer, text_field, errors, val_fraction)
    final = root / key[:32]
    meta = _read_cached(final)
    if meta is not None:
        return _open(final, meta, from_cache=True)
    if final.exists():  # damaged entry (should not happen with atomic writes): rebuild it
        shutil.rmtree(final, ignore_errors=True)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=root))
    try:
        dtype = token_dtype(tokenizer.vocab_size)
        start = time.perf_counter()
        with open(tmp / "tokens.bin", "wb") as out:
            n_tokens, n_docs = _write_tokens(out, files, tokenizer, dtype, text_field, errors, progress)
            out.flush()
            os.fsync(out.fileno())
        if n_tokens == 0:
            raise ConfigError(f"corpus {', '.join(map(str, files[:3]))} gives no tokens")
        n_train = int(n_tokens * (1.0 - val_fraction))
        meta = {
            "version": CACHE_VERSION,
            "key": key,
            "n_tokens": n_tokens,
            "n_train": n_train,
            "n_val": n_tokens - n_train,
            "n_documents": n_docs,
            "dtype": dtype.name,
            "files": [str(f) for f in files],
            "bytes": sum(f.stat().st_size for f in files),
            "tokenizer": tokenizer.fingerprint(),
            "tokenizer_kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id,
            "val_fraction": val_fraction,
            "text_field": text_field,
            "errors": errors,
            "seconds": round(time.perf_counter() - start, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        try:
            os.rename(tmp, final)  # atomic: the entry appears complete or not at all
        except OSError:  # another process finished the same entry first: use theirs
            if _read_cached(final) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open(final, _read_cached(final) or meta, from_cache=False)
