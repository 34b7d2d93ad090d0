"""Labelled text for classification: TSV / CSV / JSONL rows -> label ids -> padded batches.

    files = resolve_splits("data/sst2")                    # {"train": ..., "dev": ..., "test": ...}
    train = read_labelled(files["train"])                   # text field `sentence` or `text`
    labels = LabelMap.fit(train.labels)                     # names <-> class ids (labels.json)
    ids, n_cut = encode_texts(tokenizer, train.texts, max_len=50)
    batches = LabelledBatches(ids, labels.encode(train.labels, train.path), batch_size=32)
    ids, mask, y = batches.next()                           # (B, T), (B, T) bool, (B,)

Files: `.tsv` (tab, no quoting, GLUE style), `.csv` (comma, double-quote quoting) and
`.jsonl` (one JSON object per line) have a header / keys naming the fields; other suffixes
are sniffed from the first line. Labels may be ints or strings; they are kept as strings
("1", "pos") and mapped to class ids by `LabelMap`.

Bad input is refused with a one-line `ConfigError` naming the file (and line): a missing text
or label column lists the columns found; a line whose field count disagrees with the header
because it uses the other delimiter is reported as mixed delimiters; unknown labels in dev /
test files are named. Empty texts are skipped and counted (`empty="skip"`, the default) or
refused (`empty="error"`). A training file whose labels are all one class gets a warning.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..config import ConfigError
from ..io import atomic_write_text, json_line
from .holdout import holdout_rows
# batches live in labelled_batches.py; imported here under their old home
from .labelled_batches import LabelledBatches as LabelledBatches
from .labelled_batches import Share as Share

TEXT_FIELDS = ("sentence", "text")  # looked for, in this order, when no text field is given
SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "val", "valid", "validation"), "test": ("test",)}
SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".ndjson")
LABELS_FILE = "labels.json"


# --------------------------------------------------------------------------- reading files


@dataclass
class LabelledSplit:
    """The rows of one file: texts, their raw labels (strings) and how many empty texts were skipped."""

    path: Path
    texts: list[str]
    labels: list[str]
    skipped_empty: int = 0

    def __len__(self) -> int:
        return len(self.texts)


def file_format(path: Path, first_line: str) -> str:
    """"tsv", "csv" or "jsonl" from the suffix, else from the first line.

    >>> file_format(Path("x.txt"), '{"text": "hi", "label": 1}')
    'jsonl'
    """
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if first_line.lstrip().startswith("{"):
        return "jsonl"
    if "\t" in first_line:
        return "tsv"
    if "," in first_line:
        return "csv"
    raise ConfigError(f"{path}: cannot tell the format (use a .tsv, .csv or .jsonl file with a "
                      "header naming the text and label fields)")


def label_string(value: Any) -> str:
    """A label value as a string: JSON 1 and 1.0 and CSV "1" all become "1"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _pick_text_field(path: Path, fields: Sequence[str], text_field: str | None) -> str:
    if text_field:
        if text_field not in fields:
            raise ConfigError(f"{path}: no text column {text_field!r}; columns found: "
                              f"{', '.join(map(repr, fields))} (set --text-field)")
        return text_field
    for name in TEXT_FIELDS:
        if name in fields:
            return name
    raise ConfigError(f"{path}: no text column (looked for {' or '.join(map(repr, TEXT_FIELDS))}); "
                      f"columns found: {', '.join(map(repr, fields))} (set --text-field)")


def _check_label_field(path: Path, fields: Sequence[str], label_field: str) -> None:
    if label_field not in fields:
        raise ConfigError(f"{path}: no label column {label_field!r}; columns found: "
                          f"{', '.join(map(repr, fields))} (set --label-field)")


def _read_delimited(path: Path, text: str, fmt: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows of a TSV / CSV text; mixed delimiters are an error."""
    delimiter, other = ("\t", ",") if fmt == "tsv" else (",", "\t")
    # TSV: no quoting at all (GLUE files contain stray quote characters); CSV: RFC 4180 quotes
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    # the whole file is in memory already: a field may be as long as the file (the csv
    # module's default limit of 128 KB would stop on one long document)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    raw_lines = text.splitlines()
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ConfigError(f"{path}: the file is empty") from None
    except csv.Error as err:
        raise ConfigError(f"{path} line 1: not valid {fmt.upper()} ({err})") from None
    try:
        return header, _delimited_rows(path, reader, header, raw_lines, fmt, delimiter, other)
    except csv.Error as err:
        raise ConfigError(f"{path} line {reader.line_num}: not valid {fmt.upper()} ({err})") from None


def _delimited_rows(path: Path, reader: Any, header: list[str], raw_lines: list[str], fmt: str,
                    delimiter: str, other: str) -> list[tuple[int, list[str]]]:
    names = {"\t": "tabs", ",": "commas"}
    if len(header) == 1 and other in raw_lines[0]:
        raise ConfigError(f"{path}: the header has no {names[delimiter]} but has {names[other]}: "
                          f"this {fmt.upper()} file looks {'comma' if other == ',' else 'tab'}-separated "
                          "(rename it or fix its delimiters)")
    rows = []
    for fields in reader:
        line_no = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if len(fields) != len(header):
            raw = raw_lines[line_no - 1] if line_no - 1 < len(raw_lines) else ""
            if len(fields) < len(header) and other in raw:
                raise ConfigError(
                    f"{path} line {line_no}: mixed delimiters: the header is separated by "
                    f"{names[delimiter]} but this line has {len(fields)} field(s) and {names[other]}")
            hint = " (quote texts that contain commas)" if fmt == "csv" else ""
            raise ConfigError(f"{path} line {line_no}: {len(fields)} fields, the header has "
                              f"{len(header)} ({', '.join(header)}){hint}")
        rows.append((line_no, fields))
    return rows


def _read_jsonl(path: Path, text: str, text_field: str | None,
                label_field: str | None) -> tuple[str, list[tuple[int, Any, Any]]]:
    rows, field = [], text_field
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        obj = json_line(path, line_no, line)
        keys = list(obj)
        where = Path(f"{path} line {line_no}")
        field = _pick_text_field(where, keys, text_field)
        if label_field is not None:
            _check_label_field(where, keys, label_field)
        rows.append((line_no, obj[field], obj.get(label_field) if label_field else None))
    if not rows:
        raise ConfigError(f"{path}: the file has no rows")
    return field or "", rows


def read_labelled(path: str | Path, text_field: str | None = None, label_field: str | None = "label",
                  empty: str = "skip") -> LabelledSplit:
    """Read (text, label) rows of a TSV, CSV or JSONL file.

    Args:
        text_field: column / key of the text; None or "" = `sentence`, else `text`.
        label_field: column / key of the label; None = texts only (labels come back empty).
        empty: "skip" drops rows whose text is empty or blank (counted in `skipped_empty`);
            "error" refuses them.
    """
    path = Path(path)
    if empty not in ("skip", "error"):
        raise ConfigError(f"empty={empty!r} must be skip or error")
    if not path.is_file():
        raise ConfigError(f"data file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first:
        raise ConfigError(f"{path}: the file is empty")
    fmt = file_format(path, first)
    if fmt == "jsonl":
        _, rows = _read_jsonl(path, text, text_field, label_field)
    else:
        header, fields_rows = _read_delimited(path, text, fmt)
        t_col = header.index(_pick_text_field(path, header, text_field))
        l_col = None
        if label_field is not None:
            _check_label_field(path, header, label_field)
            l_col = header.index(label_field)
        rows = [(n, f[t_col], f[l_col] if l_col is not None else None) for n, f in fields_rows]
    texts, labels, skipped = [], [], 0
    for line_no, value, label in rows:
        value = "" if value is None else str(value)
        if not value.strip():
            if empty == "error":
                raise ConfigError(f"{path} line {line_no}: empty text (pass empty=skip to drop such rows)")
            skipped += 1
            continue
        if label_field is not None:
            label = label_string("" if label is None else label)
            if not label:
                raise ConfigError(f"{path} line {line_no}: empty label in column {label_field!r}")
            labels.append(label)
        texts.append(value)
    if not texts:
        raise ConfigError(f"{path}: no examples (all {skipped} texts are empty)" if skipped
                          else f"{path}: no examples")
    return LabelledSplit(path, texts, labels, skipped)


def warn_if_one_class(split: LabelledSplit) -> bool:
    """Warn (and return True) when every label of a training file is the same."""
    distinct = set(split.labels)
    if len(distinct) == 1:
        warnings.warn(f"{split.path}: every label is {next(iter(distinct))!r} (one class); a "
                      "classifier cannot learn anything from it (declare the other classes "
                      "with --labels if they exist)", UserWarning, stacklevel=2)
        return True
    return False


def find_split_file(folder: Path, split: str) -> Path | None:
    """The file of `split` ("train", "dev", "test" or another name) in a folder: dev.tsv,
    val.jsonl, ..."""
    for stem in SPLIT_NAMES.get(split, (split,)):
        for suffix in SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def resolve_splits(data: str | Path, dev: str | Path | None = None,
                   test: str | Path | None = None) -> dict[str, Path | None]:
    """{"train", "dev", "test"} paths from a folder (train/dev|val/test files) or one training file."""
    data = Path(data)
    if data.is_dir():
        files = {s: find_split_file(data, s) for s in SPLIT_NAMES}
        if files["train"] is None:
            found = sorted(p.name for p in data.iterdir())
            raise ConfigError(f"{data}: no train.tsv, train.csv or train.jsonl; files found: "
                              f"{', '.join(found[:10]) or 'none'}")
    elif data.is_file():
        files = {"train": data, "dev": None, "test": None}
    else:
        raise ConfigError(f"--data {str(data)!r} is neither a file nor a folder")
    for name, given in (("dev", dev), ("test", test)):
        if given:
            if not Path(given).is_file():
                raise ConfigError(f"--{name} file {str(given)!r} does not exist")
            files[name] = Path(given)
    return files


def evaluation_file(data: str | Path, split: str | None = None) -> Path:
    """The file to score: `data` itself, or a folder's `split` file (default: its test file,
    its dev file when it has no test)."""
    data = Path(data)
    if data.is_dir() and split:
        path = find_split_file(data, split)
        if path is None:
            raise ConfigError(f"{data}: no {split} file ({split}.tsv, {split}.csv, {split}.jsonl, ...)")
        return path
    if data.is_dir():
        path = find_split_file(data, "test") or find_split_file(data, "dev")
        if path is None:
            raise ConfigError(f"{data}: no test or dev file (test.tsv, dev.tsv, val.jsonl, ...)")
        return path
    if not data.is_file():
        raise ConfigError(f"--data {str(data)!r} is neither a file nor a folder")
    return data


def split_off(split: LabelledSplit, fraction: float, seed: int) -> tuple[LabelledSplit, LabelledSplit]:
    """Hold out a seeded random `fraction` of a split (a dev set when no dev file is given)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"task.dev_fraction must be in (0, 1), got {fraction}")
    train_idx, dev_idx = holdout_rows(len(split), fraction, seed)
    if not train_idx:
        raise ConfigError(f"{split.path}: {len(split)} examples are too few to hold out a dev set")
    pick = lambda idx: LabelledSplit(split.path, [split.texts[i] for i in idx],  # noqa: E731
                                     [split.labels[i] for i in idx], 0)
    train, dev = pick(train_idx), pick(dev_idx)
    train.skipped_empty = split.skipped_empty
    return train, dev


# --------------------------------------------------------------------------- labels


def _label_sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)  # numbers numerically: "2" before "10"
    except ValueError:
        return (1, 0.0, name)


class LabelMap:
    """Label names <-> class ids 0..K-1, saved as labels.json in the run."""

    def __init__(self, names: Sequence[str]) -> None:
        names = [label_string(n) for n in names]
        if len(set(names)) != len(names):
            raise ConfigError(f"labels {names} contain duplicates")
        if not names:
            raise ConfigError("no labels")
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}

    @classmethod
    def fit(cls, labels: Iterable[str], declared: Sequence[str] | None = None,
            source: str | Path = "training data") -> "LabelMap":
        """Classes of the training labels (sorted, numbers numerically), or the `declared` order."""
        seen = set(labels)
        if declared:
            extra = sorted(seen - {label_string(d) for d in declared}, key=_label_sort_key)
            if extra:
                raise ConfigError(f"{source}: labels {extra[:10]} are not among the declared "
                                  f"labels {list(declared)}")
            return cls(declared)
        if len(seen) < 2:  # a classifier of one class learns nothing (its loss is 0 at once)
            raise ConfigError(f"{source}: every example has the label {sorted(seen)[0]!r}; a "
                              "classifier needs at least two labels" if seen else f"{source}: no labels")
        return cls(sorted(seen, key=_label_sort_key))

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, labels: Sequence[str], source: str | Path) -> np.ndarray:
        """Class ids (N,) of label names; names never seen in training are an error naming them."""
        unknown = sorted({label for label in labels if label not in self.index}, key=_label_sort_key)
        if unknown:
            count = sum(1 for label in labels if label not in self.index)
            raise ConfigError(f"{source}: {count} rows have labels the training data never had: "
                              f"{', '.join(map(repr, unknown[:10]))}"
                              f"{' ...' if len(unknown) > 10 else ''} (known: "
                              f"{', '.join(map(repr, self.names[:10]))})")
        return np.fromiter((self.index[label] for label in labels), dtype=np.int64, count=len(labels))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"labels": self.names}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LabelMap":
        path = Path(path)
        if path.is_dir():
            path = path / LABELS_FILE
        if not path.is_file():
            raise ConfigError(f"{path}: no label map (is this a classifier run?)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
            raise ConfigError(f"{path}: expected {{\"labels\": [...]}}")
        return cls(data["labels"])


def class_weights(label_ids: np.ndarray, n_classes: int) -> list[float]:
    """"balanced" weights n / (K * count_k) (scikit-learn's formula); absent classes get 0.

    >>> class_weights(np.array([0, 0, 0, 1]), 2)
    [0.6666666666666666, 2.0]
    """
    counts = np.bincount(label_ids, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    np.divide(len(label_ids), n_classes * counts, out=weights, where=counts > 0)
    return weights.tolist()


# --------------------------------------------------------------------------- tokens


def encode_texts(tokenizer: Any, texts: Sequence[str], max_len: int, truncate: str = "end",
                 add_special: bool = False) -> tuple[list[np.ndarray], int]:
    """Token ids of each text, truncated to `max_len`; returns (ids, number truncated).

    truncate "end" keeps the first `max_len` tokens; "start" keeps the last ones (Keras's
    `pad_sequences` default). A text that yields no token becomes one <unk> (or pad) token so
    that every row has a real position to pool.
    """
    if truncate not in ("end", "start"):
        raise ConfigError(f"task.truncate={truncate!r} must be end or start")
    if max_len <= 0:
        raise ConfigError(f"max_len must be positive, got {max_len}")
    filler = tokenizer.unk_id if tokenizer.unk_id is not None else (tokenizer.pad_id or 0)
    out, cut = [], 0
    for ids in tokenizer.encode_batch(list(texts), add_special=add_special):
        if len(ids) > max_len:
            cut += 1
            ids = ids[:max_len] if truncate == "end" else ids[-max_len:]
        out.append(np.asarray(ids or [filler], dtype=np.int64))
    return out, cut


def unknown_fraction(tokenizer: Any, ids: Sequence[np.ndarray]) -> float:
    """Share of tokens that are <unk> (0 for tokenizers without an unknown token)."""
    if tokenizer.unk_id is None or not ids:
        return 0.0
    total = sum(len(row) for row in ids)
    unk = sum(int((row == tokenizer.unk_id).sum()) for row in ids)
    return unk / max(total, 1)


