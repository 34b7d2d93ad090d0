"""`lmforge tokenizer train|encode|decode|info`.

    lmforge tokenizer train --kind bpe --vocab-size 4096 --data corpus.txt --out tok.json
    lmforge tokenizer encode tok.json "To be, or not to be"      # prints ids
    lmforge tokenizer decode tok.json 5 6 7                        # prints text
    lmforge tokenizer info tok.json                                # kind, size, special ids
"""

from __future__ import annotations

import argparse
import sys
import time

from ..config import ConfigError
from .base import KINDS, load_tokenizer
from .train import train_tokenizer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmforge tokenizer", description="Train, inspect and use tokenizers.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:" + __doc__.split("info`.", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a tokenizer on a corpus and save tokenizer.json")
    t.add_argument("--kind", choices=KINDS, default="bpe", help="tokenizer kind (default bpe)")
    t.add_argument("--vocab-size", type=int, default=4096, help="target size, specials included")
    t.add_argument("--data", default="", help="file, folder, glob or .jsonl ('' = bundled Tiny Shakespeare)")
    t.add_argument("--out", required=True, help="output tokenizer.json (or a folder)")
    t.add_argument("--lowercase", action="store_true", help="lowercase text first (word, wordpiece)")
    t.add_argument("--min-frequency", type=int, default=1, help="drop pieces seen fewer times")
    t.add_argument("--byte-fallback", action="store_true", help="char: unseen characters as UTF-8 bytes")
    t.add_argument("--encoder-specials", action="store_true", help="add [CLS] [SEP] [MASK] (ids 4-6)")
    t.add_argument("--text-field", default="text", help="JSONL field holding the text")
    t.add_argument("--errors", choices=("strict", "replace"), default="strict", help="non-UTF-8 bytes")
    t.add_argument("--max-chars", type=int, default=None, help="train on at most this many characters")

    e = sub.add_parser("encode", help="print the token ids of a text")
    e.add_argument("tokenizer", help="tokenizer.json or a folder")
    e.add_argument("text", nargs="*", help="text (several words are joined by spaces; none = stdin)")
    e.add_argument("--tokens", action="store_true", help="print token strings instead of ids")

    d = sub.add_parser("decode", help="print the text of token ids")
    d.add_argument("tokenizer", help="tokenizer.json or a folder")
    d.add_argument("ids", nargs="+", help="token ids")
    d.add_argument("--keep-special", action="store_true", help="keep special tokens such as <eos>")

    i = sub.add_parser("info", help="print kind, vocabulary size and special-token ids")
    i.add_argument("tokenizer", help="tokenizer.json or a folder")
    return p


def _train(args: argparse.Namespace) -> int:
    from ..data.corpus import corpus_texts_for_training, resolve_corpus_files
    from ..outputs import check_output

    files = resolve_corpus_files(args.data)
    check_output(args.out, inputs=files)  # not over the corpus, not into a run's tokenizer
    texts = corpus_texts_for_training(files, args.text_field, args.errors, args.max_chars)
    start = time.perf_counter()
    tok = train_tokenizer(
        args.kind, texts, args.vocab_size, args.lowercase, args.min_frequency,
        byte_fallback=args.byte_fallback, encoder_specials=args.encoder_specials or None,
    )
    path = tok.save(args.out)
    print(f"wrote {path}: {tok.kind}, vocab_size {tok.vocab_size}, specials {tok.special_ids} "
          f"({len(files)} file(s), {time.perf_counter() - start:.1f}s)")
    return 0


def _decode(args: argparse.Namespace) -> int:
    tok = load_tokenizer(args.tokenizer)
    ids = []
    for raw in args.ids:
        try:
            i = int(raw)
        except ValueError:
            raise ConfigError(f"token id {raw!r} is not an integer") from None
        if not 0 <= i < tok.vocab_size:
            raise ConfigError(f"token id {i} is out of range for vocab_size {tok.vocab_size}")
        ids.append(i)
    print(tok.decode(ids, skip_special=not args.keep_special))
    return 0


def cli(argv: list[str]) -> int:
    """Entry point of `lmforge tokenizer ...`; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return int(exit_.code or 0)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "decode":
            return _decode(args)
        tok = load_tokenizer(args.tokenizer)
        if args.command == "encode":
            text = " ".join(args.text) if args.text else sys.stdin.read()
            ids = tok.encode(text)
            print(" ".join(tok.id_to_token(i) or "" for i in ids) if args.tokens else " ".join(map(str, ids)))
            return 0
        print(f"kind {tok.kind}\nvocab_size {tok.vocab_size}")
        for role, i in tok.special_ids.items():
            print(f"{role} {i} {tok.id_to_token(i)}")
        return 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
