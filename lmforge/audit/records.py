"""Documents of any lmforge data format, streamed, and written back in the same format.

    for source in discover("corpus/"):                # text, JSONL, TSV/CSV files; parallel pairs
        for rec in source.records():                   # Record(fields={"text": ...}, label, ...)
            ...
        with source.writer(out_dir) as write:          # same layout and format under out_dir
            write(rec)

A plain text file is cut into documents by `unit`: a line, a paragraph (lines up to a blank
line; the default) or the file; any document longer than `max_doc_chars` is cut at a line
end, so memory stays bounded on files of any size. A JSONL line, a TSV/CSV row and a line
pair of a parallel corpus (`train.de` + `train.en`) are one record each; their text fields
are the ones audited and cleaned, every other field is written back untouched.

Bytes that are not UTF-8 raise one ConfigError naming the file and byte offset.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import ConfigError
from ..data.labelled import TEXT_FIELDS, file_format

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
DELIMITED_SUFFIXES = (".tsv", ".csv")
UNITS = ("line", "paragraph", "file")
LANG_SUFFIX = re.compile(r"^\.[a-z]{2,3}(?:[-_][A-Za-z]{2,4})?$")  # .de, .en, .pt_BR
READ_BYTES = 1 << 20  # longest piece of one line read at a time


@dataclass
class Record:
    """One document: its text fields (audited, cleaned), label, and where it came from."""

    fields: dict[str, str]
    label: str | None = None
    line: int = 0  # first line of the record in its file
    raw: Any = None  # what the writer needs besides the fields (JSON object, CSV row, trailer)
    separator: bool = False  # blank lines between text documents: written back, never audited

    @property
    def text(self) -> str:
        return "\n".join(self.fields.values())


def decoded_lines(path: Path, max_chars: int | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line, newline kept; with `max_chars`, a longer line comes
    in pieces (only the last has the newline). Invalid UTF-8: ConfigError with the byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed, line_no, first = 0, 1, True
    limit = READ_BYTES if max_chars is None else min(READ_BYTES, max(max_chars, 4))
    with open(path, "rb") as fh:
        pending = ""
        while True:
            raw = fh.readline(limit)
            held = len(decoder.getstate()[0])  # bytes of a split character held back
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                raise ConfigError(f"{path}: not valid UTF-8 at byte offset "
                                  f"{consumed - held + err.start} (line {line_no})") from None
            consumed += len(raw)
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            if not raw:
                if pending:
                    yield line_no, pending
                return
            pending += text
            if pending.endswith("\n") or (max_chars is not None and len(pending) >= max_chars):
                yield line_no, pending
                line_no += pending.endswith("\n")
                pending = ""


class Source:
    """One input (a file, or a pair of parallel files) and its relative place in the corpus."""

    kind = ""

    def __init__(self, paths: list[Path], rel: list[Path]) -> None:
        self.paths, self.rel = paths, rel

    @property
    def name(self) -> str:
        return " + ".join(map(str, self.rel))

    def records(self) -> Iterator[Record]:
        raise NotImplementedError

    @contextlib.contextmanager
    def writer(self, out_dir: Path) -> Iterator[Callable[[Record], None]]:
        raise NotImplementedError

    def _open_out(self, out_dir: Path, rel: Path) -> io.TextIOWrapper:
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return open(target, "w", encoding="utf-8", newline="")


class TextSource(Source):
    """A plain text file: documents are lines, paragraphs or the whole file (see module doc)."""

    kind = "text"

    def __init__(self, path: Path, rel: Path, unit: str = "paragraph",
                 max_doc_chars: int = 100_000) -> None:
        super().__init__([path], [rel])
        if unit not in UNITS:
            raise ConfigError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.unit, self.max_doc_chars = unit, max_doc_chars

    def records(self) -> Iterator[Record]:
        doc: list[str] = []
        start = size = 0

        def flush(trailer_from_text: bool) -> Record:
            text = "".join(doc)
            body = text.rstrip("\n") if trailer_from_text else text
            return Record({"text": body}, line=start, raw=text[len(body):])

        for line_no, piece in decoded_lines(self.paths[0], self.max_doc_chars):
            if not piece.strip() and self.unit != "file":
                if doc:
                    yield flush(True)
                    doc, size = [], 0
                yield Record({"text": ""}, line=line_no, raw=piece, separator=True)
                continue
            if not doc:
                start = line_no
            doc.append(piece)
            size += len(piece)
            if self.unit == "line" and piece.endswith("\n"):
                yield flush(True)
                doc, size = [], 0
            elif size >= self.max_doc_chars:  # an over-long document: cut here, write on
                yield flush(False)
                doc, size = [], 0
        if doc:
            yield flush(True)

    @contextlib.contextmanager
    def writer(self, out_dir: Path) -> Iterator[Callable[[Record], None]]:
        with self._open_out(out_dir, self.rel[0]) as fh:
            yield lambda rec: fh.write(rec.fields["text"] + (rec.raw or ""))


class JsonlSource(Source):
    """One JSON object a line; `text_fields` (default: text or sentence, else every string
    field but `id`) are the documents' text, `label_field` its label when present."""

    kind = "jsonl"

    def __init__(self, path: Path, rel: Path, text_fields: list[str] | None = None,
                 label_field: str = "label") -> None:
        super().__init__([path], [rel])
        self.text_fields, self.label_field = text_fields, label_field

    def records(self) -> Iterator[Record]:
        for line_no, line in decoded_lines(self.paths[0]):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{self.paths[0]} line {line_no}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{self.paths[0]} line {line_no}: expected a JSON object, "
                                  f"got {type(obj).__name__}")
            names = self.text_fields or _default_text_fields(obj)
            missing = [n for n in names if not isinstance(obj.get(n), str)]
            if missing or not names:
                raise ConfigError(f"{self.paths[0]} line {line_no}: no text field "
                                  f"{(missing or ['text'])[0]!r}; fields found: "
                                  f"{', '.join(map(repr, obj))} (set --text-field)")
            label = obj.get(self.label_field)
            yield Record({n: obj[n] for n in names}, None if label is None else str(label),
                         line_no, obj)

    @contextlib.contextmanager
    def writer(self, out_dir: Path) -> Iterator[Callable[[Record], None]]:
        with self._open_out(out_dir, self.rel[0]) as fh:
            yield lambda rec: fh.write(json.dumps({**rec.raw, **rec.fields}, ensure_ascii=False) + "\n")


def _default_text_fields(obj: dict[str, Any]) -> list[str]:
    for name in TEXT_FIELDS:
        if isinstance(obj.get(name), str):
            return [name]
    return [k for k, v in obj.items() if isinstance(v, str) and k != "id"]


class DelimitedSource(Source):
    """A TSV (tab, no quoting, GLUE style) or CSV (RFC 4180 quotes) file with a header row."""

    kind = "delimited"

    def __init__(self, path: Path, rel: Path, text_fields: list[str] | None = None,
                 label_field: str = "label") -> None:
        super().__init__([path], [rel])
        self.fmt = "tsv" if path.suffix.lower() == ".tsv" else "csv"
        self.text_fields, self.label_field = text_fields, label_field

    def _reader(self, lines: Iterator[str]) -> Any:
        if self.fmt == "tsv":
            return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        return csv.reader(lines, delimiter=",", quoting=csv.QUOTE_MINIMAL)

    def records(self) -> Iterator[Record]:
        path = self.paths[0]
        reader = self._reader(line for _, line in decoded_lines(path))
        header = next(reader, None)
        if header is None:
            return
        self.header = header = [h.strip() for h in header]
        names = self.text_fields or [n for n in TEXT_FIELDS if n in header][:1]
        missing = [n for n in names if n not in header]
        if missing or not names:
            wanted = repr(missing[0]) if missing else " or ".join(map(repr, TEXT_FIELDS))
            raise ConfigError(f"{path}: no text column {wanted}; columns found: "
                              f"{', '.join(map(repr, header))} (set --text-field)")
        cols = [header.index(n) for n in names]
        label_col = header.index(self.label_field) if self.label_field in header else None
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise ConfigError(f"{path} line {reader.line_num}: {len(row)} fields, the "
                                  f"header has {len(header)} ({', '.join(header)})")
            yield Record({n: row[c] for n, c in zip(names, cols)},
                         row[label_col] if label_col is not None else None, reader.line_num, row)

    @contextlib.contextmanager
    def writer(self, out_dir: Path) -> Iterator[Callable[[Record], None]]:
        with self._open_out(out_dir, self.rel[0]) as fh:
            tsv = self.fmt == "tsv"
            # TSV as GLUE writes it: tabs between cells, no quoting at all (csv's QUOTE_NONE
            # would refuse a quote character); CSV with RFC 4180 quotes where needed
            out = None if tsv else csv.writer(fh, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            header_written = False

            def put(cells: list[str]) -> None:
                if tsv:
                    fh.write("\t".join(cells) + "\n")
                else:
                    out.writerow(cells)

            def write(rec: Record) -> None:
                nonlocal header_written
                if not header_written:
                    put(self.header)
                    header_written = True
                row = list(rec.raw)
                for name, value in rec.fields.items():
                    row[self.header.index(name)] = " ".join(value.split("\t")) if tsv else value
                put(row)

            yield write
            if not header_written and hasattr(self, "header"):
                put(self.header)  # every row dropped: the header still says the format


class ParallelSource(Source):
    """Two line-aligned files, `NAME.xx` and `NAME.yy`: record i is line i of both."""

    kind = "parallel"

    def records(self) -> Iterator[Record]:
        (a, b), langs = self.paths, [p.suffix[1:] for p in self.paths]
        left, right = decoded_lines(a), decoded_lines(b)
        for (line_no, x), y in zip(left, right):
            yield Record({langs[0]: x.rstrip("\n"), langs[1]: y[1].rstrip("\n")}, line=line_no)
        extra = next(left, None) or next(right, None)
        if extra is not None:
            raise ConfigError(f"misaligned parallel files {a} and {b}: one has more lines "
                              f"(line {extra[0]}); line i of one must translate line i of the other")

    @contextlib.contextmanager
    def writer(self, out_dir: Path) -> Iterator[Callable[[Record], None]]:
        with self._open_out(out_dir, self.rel[0]) as fa, self._open_out(out_dir, self.rel[1]) as fb:
            def write(rec: Record) -> None:
                x, y = rec.fields.values()
                fa.write(x + "\n")
                fb.write(y + "\n")

            yield write


def discover(path: str | Path, unit: str = "paragraph", text_fields: list[str] | None = None,
             label_field: str = "label", max_doc_chars: int = 100_000) -> list[Source]:
    """The sources of a file or folder (recursively; hidden files skipped). In a folder,
    `NAME.xx` + `NAME.yy` with language-code suffixes form a parallel pair."""
    root = Path(path).expanduser()
    if root.is_file():
        files, base = [root], root.parent
    elif root.is_dir():
        files = sorted(f for f in root.rglob("*") if f.is_file()
                       and not any(p.startswith(".") for p in f.relative_to(root).parts))
        base = root
    else:
        raise ConfigError(f"data path {str(root)!r} does not exist")
    by_stem: dict[Path, list[Path]] = {}
    for f in files:
        if LANG_SUFFIX.match(f.suffix) and f.suffix.lower() not in TEXT_SUFFIXES + (".md",):
            by_stem.setdefault(f.with_suffix(""), []).append(f)
    sources: list[Source] = []
    for f in files:
        rel, suffix = f.relative_to(base), f.suffix.lower()
        pair = by_stem.get(f.with_suffix(""), [])
        if len(pair) == 2 and f in pair:
            if f == pair[0]:
                sources.append(ParallelSource(pair, [p.relative_to(base) for p in pair]))
        elif suffix in JSONL_SUFFIXES:
            sources.append(JsonlSource(f, rel, text_fields, label_field))
        elif suffix in DELIMITED_SUFFIXES:
            sources.append(DelimitedSource(f, rel, text_fields, label_field))
        elif suffix in TEXT_SUFFIXES or root.is_file():
            if root.is_file() and suffix not in TEXT_SUFFIXES:
                first = next(decoded_lines(f, 4096), (0, ""))[1]
                if file_format_or_none(f, first) == "jsonl":
                    sources.append(JsonlSource(f, rel, text_fields, label_field))
                    continue
            sources.append(TextSource(f, rel, unit, max_doc_chars))
    if not sources:
        raise ConfigError(f"{root}: no text, JSONL, TSV/CSV or parallel files found")
    return sources


def file_format_or_none(path: Path, first_line: str) -> str | None:
    try:
        return file_format(path, first_line)
    except ConfigError:
        return None
