"""`lmforge generate RUN ...`: text from a trained run, on the command line.

    lmforge generate runs/s1 --prompt "ROMEO:" --max-new-tokens 500 --temperature 0.8 --top-p 0.95
    lmforge generate runs/s1 --prompt-file prompts.txt --num-samples 4 --seed 7 --stream
    lmforge generate runs/s1 --prompt "The" --beams 5 --length-penalty 1.0 --stop "\\n\\n"
    lmforge generate runs/smollm2 --chat --prompt "Name three colours."
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    r"""Turn the two characters \n (and \t, \r, \\) typed in a shell into the real character.

    >>> unescape(r"\n\n")
    '\n\n'
    """
    return re.sub(r"\\([ntr\\])", lambda m: ESCAPES[m.group(1)], text)


def read_prompts(path: str) -> list[str]:
    """Prompts of a file, one per line; blank lines are skipped."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--prompt-file {path!r} does not exist")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"--prompt-file {path!r} is not UTF-8 text ({err.reason})") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"--prompt-file {path!r} holds no prompt (one per line)")
    return prompts


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `lmforge generate`."""
    p = argparse.ArgumentParser(prog="lmforge generate", description="Generate text from a run.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:" + __doc__.split("line.", 1)[1])
    p.add_argument("run", help="run directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", default="", help="text to continue ('' = start a new document)")
    src.add_argument("--prompt-file", help="a text file with one prompt per line")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=1, help="samples (or best beams) per prompt")
    p.add_argument("--seed", type=int, default=None, help="sample j of a prompt uses seed + j")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--min-p", type=float, default=0.0, help="0 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    p.add_argument("--beams", type=int, default=1, help="> 1 = beam search")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="beams rank by logprob / length ** this (default 1; seq2seq: the run's)")
    p.add_argument("--no-early-stopping", action="store_true",
                   help="beams: search until no live beam can beat the finished ones")
    p.add_argument("--stop", action="append", default=[],
                   help="stop before this string (repeatable; \\n and \\t escapes)")
    p.add_argument("--scores", action="store_true",
                   help="print each sample's log-probability and finish reason (stderr)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the whole prefix per token (slow; for checking)")
    p.add_argument("--compile", action="store_true",
                   help="CPU: compile one-sequence decoding (its matrix-vector products, and "
                        "each Llama block as one call; faster per token after a few seconds "
                        "of compiling; see docs/decoding.md)")
    p.add_argument("--chat", action="store_true",
                   help="each prompt is a user message: render it with the run's chat template "
                        "and print the assistant's reply (ends at the end-of-turn token)")
    p.add_argument("--system", help="with --chat: a system message before each prompt")
    p.add_argument("--weights", choices=("best", "last"), default="best")
    p.add_argument("--device", default="auto")
    return p


def cli(argv: list[str]) -> int:
    """lmforge generate RUN --prompt TEXT [sampling / beam options]"""
    args = build_parser().parse_args(argv)
    from ..run import load_run, read_model_config
    from ..tasks.registry import task_of_run
    from .sampling import DecodeOptions

    prompts = read_prompts(args.prompt_file) if args.prompt_file else [args.prompt]
    options = DecodeOptions.from_kwargs(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
        num_beams=args.beams, length_penalty=args.length_penalty,
        early_stopping=not args.no_early_stopping, num_samples=args.num_samples, seed=args.seed,
        stop=[unescape(s) for s in args.stop], use_cache=not args.no_cache, compile=args.compile)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    decode = task_of_run(args.run).decode
    if decode == "seq2seq":
        return _seq2seq(args, prompts, options)
    if decode != "causal":
        raise ValueError(f"{args.run}: a {read_model_config(args.run).head} run does not generate "
                         "text; generation needs a causal language model (head causal_lm)")
    run = load_run(args.run, device=args.device, weights=args.weights)
    from ..tokenizers.unknown import warn_unknown

    warn_unknown(run.tokenizer, prompts, "the prompt", lambda line: print(f"lmforge: {line}", file=sys.stderr))
    if args.chat:
        return _chat(run, prompts, options, args.system, args.stream)
    many = len(prompts) * options.num_samples > 1

    def header(i: int, j: int) -> None:
        if many:
            print(f"----- prompt {i + 1}, sample {j + 1} -----")

    if args.stream:
        for i, prompt in enumerate(prompts):
            for j in range(options.num_samples):
                header(i, j)
                opts = DecodeOptions.from_kwargs(**{**vars(options), "num_samples": 1,
                                                    "seed": None if options.seed is None
                                                    else options.seed + j})
                print(prompt, end="", flush=True)
                for piece in run.stream(prompt, **vars(opts)):
                    print(piece, end="", flush=True)
                print()
        return 0
    for start in range(0, len(prompts), args.batch_size):
        chunk = prompts[start:start + args.batch_size]
        results = run.generate(chunk, return_scores=True, **vars(options))
        for i, (prompt, gens) in enumerate(zip(chunk, results)):
            for j, gen in enumerate(gens if isinstance(gens, list) else [gens]):
                header(start + i, j)
                print(prompt + gen.text)
                if args.scores:
                    print(f"[logprob {gen.logprob:.4f}, score {gen.score:.4f}, {len(gen.ids)} "
                          f"tokens, finish: {gen.finish_reason}]", file=sys.stderr)
    return 0


def _chat(run, prompts: list[str], options, system: str | None, stream: bool) -> int:
    """--chat: one single-turn conversation per prompt, the reply printed (streamed)."""
    from ..chat.session import encode_chat, stream_reply

    if options.num_samples > 1:
        raise ValueError("--chat makes one reply per prompt: drop --num-samples")
    for prompt in prompts:
        messages = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": "user", "content": prompt}]
        ids = encode_chat(run.tokenizer, run.chat_template, messages)
        pieces = stream_reply(run.model, run.tokenizer, run.chat_template, ids, options)
        if stream:
            for piece in pieces:
                print(piece, end="", flush=True)
            print()
        else:
            print("".join(pieces))
    return 0


def _seq2seq(args: argparse.Namespace, prompts: list[str], options) -> int:
    """An encoder-decoder run: each prompt is a source text, decoded by the seq2seq task."""
    from ..tasks.seq2seq_infer import load_seq2seq

    if options.sampling or options.num_samples > 1 or args.stream or options.stop:
        raise ValueError("a seq2seq run decodes with beam search only: drop the sampling "
                         "options, --num-samples, --stream and --stop")
    run = load_seq2seq(args.run, device=args.device, weights=args.weights)
    beams = options.num_beams if options.num_beams > 1 else None  # None: the run's default
    for text in run.generate(prompts, beams=beams, length_penalty=args.length_penalty,
                             batch_size=args.batch_size):
        print(text)
    return 0
