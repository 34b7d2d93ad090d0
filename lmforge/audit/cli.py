"""`lmforge data audit|clean` and `lmforge audit canaries|memorization|bias|counterfactual`."""

from __future__ import annotations

import argparse
import importlib

from ..config import ConfigError

DATA_COMMANDS = {
    "audit": ("lmforge.audit.cli:audit_data_cli", "sizes, languages, duplicates, PII, labels"),
    "clean": ("lmforge.audit.cli:clean_data_cli", "redact/drop PII, remove duplicates, filter languages"),
}
AUDIT_COMMANDS = {
    "canaries": ("lmforge.audit.memorization:canaries_cli", "plant random secrets into a corpus"),
    "memorization": ("lmforge.audit.memorization:memorization_cli",
                     "canary exposure, greedy completion, training-text extraction"),
    "bias": ("lmforge.audit.bias:bias_cli", "per-group metrics of a classifier (fairlearn)"),
    "counterfactual": ("lmforge.audit.counterfactual:counterfactual_cli",
                       "prediction flips when only an identity term changes"),
}


EXAMPLES = {
    "data": ["lmforge data audit ../shared/data/sst2 --out audit/sst2",
             "lmforge data clean corpus/ --out clean/ --pii redact --dedup near --lang en"],
    "audit": ["lmforge audit canaries corpus.txt --out planted --count 20 --repeats 5",
              "lmforge audit memorization runs/x --canaries planted/canaries.json",
              "lmforge audit bias runs/sst --data reviews.tsv --group-field group"],
}


def _dispatch(prog: str, commands: dict[str, tuple[str, str]], argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: lmforge {prog} {{{','.join(commands)}}} ...   (add --help for each: "
              "its options)\n")
        for name, (_, help_) in commands.items():
            print(f"  {name:<15} {help_}")
        print("\nexamples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[prog]))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        raise ConfigError(f"unknown `lmforge {prog}` command {name!r}; valid: {', '.join(commands)}")
    module, func = commands[name][0].split(":")
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


def data_cli(argv: list[str]) -> int:
    """lmforge data {audit,clean} ..."""
    return _dispatch("data", DATA_COMMANDS, argv)


def audit_cli(argv: list[str]) -> int:
    """lmforge audit {canaries,memorization,bias,counterfactual} ..."""
    return _dispatch("audit", AUDIT_COMMANDS, argv)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="text file, folder, JSONL, TSV/CSV or parallel corpus folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--unit", default="paragraph", choices=("line", "paragraph", "file"),
                        help="what one document of a plain text file is (default: paragraph)")
    parser.add_argument("--text-field", help="JSONL/TSV/CSV text field(s), comma-separated")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="near-duplicate Jaccard threshold (default 0.5)")
    parser.add_argument("--shingle", type=int, default=3, help="words per shingle (default 3)")
    parser.add_argument("--window", type=int, default=100_000,
                        help="documents kept in the near-duplicate index (bounds memory)")
    parser.add_argument("--terms", help="file of extra terms to find (one a line): PII type 'term'")
    parser.add_argument("--regions", help="phone regions tried for national numbers, e.g. US,GB,DE")


def _shared(args: argparse.Namespace) -> dict:
    from .pii import read_terms

    return {"unit": args.unit, "label_field": args.label_field, "threshold": args.threshold,
            "shingle": args.shingle, "window": args.window,
            "text_fields": [f.strip() for f in args.text_field.split(",")] if args.text_field else None,
            "terms": read_terms(args.terms) if args.terms else [],
            "regions": [r.strip() for r in args.regions.split(",")] if args.regions else None}


def audit_data_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge data audit",
                                     description="Report what a corpus holds: audit.json, audit.md, plots/.")
    _common(parser)
    parser.add_argument("--tokenizer", help="run folder or tokenizer.json to count tokens with")
    parser.add_argument("--no-languages", action="store_true", help="skip language detection")
    args = parser.parse_args(argv)
    from .report import audit_corpus

    audit_corpus(args.path, args.out, tokenizer=args.tokenizer, languages=not args.no_languages,
                 **_shared(args))
    return 0


def clean_data_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge data clean",
        description="Write a cleaned copy of a corpus into a new folder (streaming; the input "
                    "is never written; an interrupted run leaves no output).")
    _common(parser)
    parser.add_argument("--pii", default="redact", choices=("redact", "drop", "keep"))
    parser.add_argument("--pii-types", help="comma-separated subset of the PII types")
    parser.add_argument("--dedup", default="exact", choices=("exact", "near", "none"))
    parser.add_argument("--lang", help="keep only these languages (ISO 639-1, comma-separated)")
    args = parser.parse_args(argv)
    from .clean import clean_corpus
    from .language import parse_languages

    types = [t.strip() for t in args.pii_types.split(",")] if args.pii_types else None
    clean_corpus(args.path, args.out, pii=args.pii, dedup=args.dedup, pii_types=types,
                 languages=parse_languages(args.lang), **_shared(args))
    return 0
