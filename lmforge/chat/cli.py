"""`lmforge chat RUN`: talk with a chat model in the terminal, or answer piped lines.

    lmforge chat runs/smollm2 --system "You are terse."        # interactive, streaming
    echo "What is the capital of France?" | lmforge chat runs/smollm2   # one turn per line

Commands inside a chat: /reset (forget the conversation), /exit (or end of input).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, TextIO

RESET, EXIT = "/reset", "/exit"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmforge chat", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lmforge chat runs/smollm2 --system \"You are terse.\"\n  echo \"What is the capital of France?\" | lmforge chat runs/smollm2",
        description="Chat with a run that has a chat template (e.g. one made by `lmforge convert "
                    "from-gguf`). Interactive on a terminal; with piped input each line is one "
                    "user turn and each answer is printed on its own. /reset forgets the "
                    "conversation, /exit ends it.")
    p.add_argument("run", help="run directory (tokenizer_config.json holds the chat template)")
    p.add_argument("--system", help="system message (kept when old turns are dropped)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="longest reply, in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--compile", action="store_true",
                   help="CPU: compile one-sequence decoding (its matrix-vector products, and "
                        "each Llama block as one call): about 2x faster replies after a few "
                        "seconds of compiling on the first one; see docs/decoding.md")
    p.add_argument("--device", default="auto")
    return p


def _answer(session: Any, text: str, out: TextIO, err: TextIO) -> None:
    from .session import ChatError

    try:
        for piece in session.send(text):
            out.write(piece)
            out.flush()
    except ChatError as error:
        err.write(f"lmforge: {error}\n")
        err.flush()
    out.write("\n")
    out.flush()


def run_chat(session: Any, lines: Any, out: TextIO, err: TextIO, interactive: bool) -> None:
    """Drive a ChatSession with input lines (a terminal's, or a pipe's) until /exit or EOF."""
    for line in lines:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() == EXIT:
            break
        if text.strip() == RESET:
            session.reset()
            err.write("(conversation reset)\n")
            continue
        if interactive:
            out.write("assistant> ")
        _answer(session, text, out, err)


def _terminal_lines() -> Any:
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print()
            return


def cli(argv: list[str]) -> int:
    """lmforge chat RUN [--system TEXT] [decoding options]"""
    args = build_parser().parse_args(argv)
    from ..generate.sampling import DecodeOptions
    from ..run import load_run
    from .session import ChatSession

    options = DecodeOptions.from_kwargs(max_new_tokens=args.max_new_tokens,
                                        temperature=args.temperature, top_k=args.top_k,
                                        top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                                        seed=args.seed, compile=args.compile)
    run = load_run(args.run, device=args.device)
    note = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:  # "no chat template": one plain note
        warnings.simplefilter("always")
        template = run.chat_template
    for warning in caught:
        note(f"note: {warning.message}")
    session = ChatSession(run.model, run.tokenizer, template, args.system, options, note)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.run} ({RESET} forgets the conversation, {EXIT} or Ctrl-D ends)")
    try:
        run_chat(session, _terminal_lines() if interactive else sys.stdin, sys.stdout, sys.stderr,
                 interactive)
    except KeyboardInterrupt:
        print()
    return 0
