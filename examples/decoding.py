"""Greedy, temperature, top-k, top-p and beam search on one trained run; scoring text.

Shows `Run.generate` with each decoding strategy (all seeded, so reruns print the same text),
`return_scores=True` for the log-probability of what was generated, and
`Run.score(prompt, continuation)` = log p(continuation | prompt) to rank candidate endings.

Uses the run given by `--run` (any causal lmforge run, e.g. the one examples/shakespeare_gpt.py
writes); without it, first pretrains a small char GPT on Tiny Shakespeare into `--out`.
Time on 2 CPU cores: under a minute without `--run` (500 steps of a 2-layer GPT, val loss
2.31; measured: 19 s of CPU on one thread), seconds with one; `--quick`: seconds (a toy model).
A weak model shows the textbook failure of greedy and beam search on open-ended text: they
loop ("the the the"), which is why sampling with top-k / top-p is the default for stories.

    python examples/decoding.py [--run runs/examples/shakespeare-gpt]
"""

import argparse
from pathlib import Path

from lmforge.config import load_config
from lmforge.pretrain import pretrain
from lmforge.run import load_run

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--run", help="a trained causal LM run directory (default: train one)")
parser.add_argument("--out", default="runs/examples/decoding", help="where to train one")
parser.add_argument("--quick", action="store_true", help="a toy model for a few steps (smoke test)")
args = parser.parse_args()

run_dir = args.run
if run_dir is None:
    size = ["model.n_layers=1", "model.d_model=32", "train.max_steps=20"] if args.quick else \
        ["model.n_layers=2", "model.d_model=128", "train.max_steps=500"]
    config = load_config(None, [f"out={args.out}", "train.eval_every=250", "train.eval_batches=4",
                                "train.sample_tokens=0", *size])
    run_dir = pretrain(config, resume=(Path(args.out) / "trainer_state.pt").exists())
run = load_run(run_dir)
prompt, n = "ROMEO:\nI ", 40 if args.quick else 80


def show(name: str, text: str) -> None:
    print(f"--- {name}\n{prompt}{text}\n")


show("greedy (temperature 0): always the most likely token",
     run.generate(prompt, max_new_tokens=n, temperature=0))
for t in (0.5, 1.0, 1.5):  # low = safe and repetitive, high = varied and then incoherent
    show(f"temperature {t}", run.generate(prompt, max_new_tokens=n, temperature=t, seed=0))
show("top-k 10 (sample among the 10 likeliest tokens)",
     run.generate(prompt, max_new_tokens=n, top_k=10, seed=0))
show("top-p 0.9 (nucleus: the smallest set holding 90% of the probability)",
     run.generate(prompt, max_new_tokens=n, top_p=0.9, seed=0))

beams = run.generate(prompt, max_new_tokens=n, num_beams=5, num_samples=3, return_scores=True)
for i, g in enumerate(beams):  # the 3 best of 5 beams, ranked by log-prob / length
    show(f"beam {i + 1} of 5: log-prob {g.logprob:.2f}, score {g.score:.3f}, {g.finish_reason}",
         g.text)

# log p(continuation | prompt): an in-style ending should outscore a scrambled one
prompt = "ROMEO:\nWhat light through yonder window"
endings = [" breaks?", " skaerb?", " BREAKS?"]
for ending, logp in zip(endings, run.score(prompt, endings)):
    print(f"log p({ending!r:>12} | {prompt!r}) = {logp:7.2f}")
