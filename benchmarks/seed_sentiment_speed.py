"""Training speed of the seed's Keras sentiment models: lmforge vs plain PyTorch vs Keras.

The seed trains Embedding(10,000 x 64) -> SimpleRNN(64) or LSTM(64) -> Dense(1, sigmoid) with
RMSprop and binary cross-entropy, batch 32, on 25,000 reviews cut to 200 tokens. Keras 3.15 on
TensorFlow 2.21 reached 1,306 (SimpleRNN) and 702 (LSTM) samples/s on this machine (2 cores).
Speed does not depend on the words, so the data here are random ids of the same shape.

Both PyTorch sides see the same batches: plain PyTorch (nn.Embedding -> nn.RNN / nn.LSTM ->
nn.Linear, the hand-written loop) and lmforge (`build_model(arch=rnn|lstm, head=classifier)`,
`ClassificationTask`, the `Trainer`). Rounds alternate so that machine load hits both alike;
the median of the rounds is reported.

    python benchmarks/seed_sentiment_speed.py                        # one full epoch per round
    python benchmarks/seed_sentiment_speed.py --samples 3200 --rounds 3   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmforge.config import ModelConfig, TrainConfig  # noqa: E402
from lmforge.data.labelled import LabelledBatches  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402
from lmforge.tasks.classify import ClassificationTask  # noqa: E402
from lmforge.train.loop import Trainer  # noqa: E402

KERAS = {"rnn": 1306.0, "lstm": 702.0}  # samples/s, Keras 3.15 / TF 2.21, this machine
VOCAB, WIDTH, BATCH = 10_000, 64, 32


class Plain(nn.Module):
    """The Keras model in plain PyTorch: last hidden state -> one logit."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.rnn = (nn.RNN if cell == "rnn" else nn.LSTM)(WIDTH, WIDTH, batch_first=True)
        self.dense = nn.Linear(WIDTH, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(ids))  # (B, T, H)
        return self.dense(out[:, -1])[:, 0]  # (B,)


def make_data(n: int, seq_len: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(n, seq_len), dtype=np.int64)  # (N, T); 0 is padding
    return ids, rng.integers(0, 2, size=n, dtype=np.int64)  # (N,)


def time_plain(cell: str, ids: np.ndarray, labels: np.ndarray) -> float:
    """Samples/s of the hand-written loop over one pass of the data."""
    torch.manual_seed(0)
    model = Plain(cell)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    x_all, y_all = torch.from_numpy(ids), torch.from_numpy(labels).float()
    order = torch.randperm(len(ids))
    start = time.perf_counter()
    for i in range(0, len(ids) - BATCH + 1, BATCH):
        rows = order[i: i + BATCH]
        loss = F.binary_cross_entropy_with_logits(model(x_all[rows]), y_all[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    steps = len(ids) // BATCH
    return steps * BATCH / (time.perf_counter() - start)


def time_lmforge(cell: str, ids: np.ndarray, labels: np.ndarray, tmp: Path, precision: str) -> float:
    """Samples/s of the same model built and trained by lmforge (training time of the loop)."""
    config = ModelConfig(arch=cell, head="classifier", vocab_size=VOCAB, d_embed=WIDTH,
                         d_model=WIDTH, n_layers=1, dropout=0.0, activation="tanh",
                         pooling="last", n_classes=2, max_len=ids.shape[1],
                         extra={"binary_head": True})
    torch.manual_seed(0)
    model = build_model(config)
    rows = list(ids)
    train = LabelledBatches(rows, labels, BATCH, pad_id=0, shuffle=True, bucket=False, seed=0)
    dev = LabelledBatches(rows[:BATCH], labels[:BATCH], BATCH, pad_id=0, shuffle=False)
    task = ClassificationTask(model, train, dev, ["negative", "positive"])
    steps = len(ids) // BATCH
    cfg = TrainConfig(max_steps=steps, batch_size=BATCH, optimizer="rmsprop", lr=1e-3,
                      schedule="constant", warmup_steps=0, weight_decay=0.0, grad_clip=0.0,
                      eval_every=0, log_every=max(steps, 1), progress=False, precision=precision,
                      device="cpu")
    run = Path(tempfile.mkdtemp(dir=tmp))
    trainer = Trainer(task, cfg, run, log=lambda *a: None)
    trainer.fit()
    return steps * BATCH / trainer.elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="rnn,lstm", help="rnn, lstm or both (comma-separated)")
    p.add_argument("--samples", type=int, default=25_000, help="training sequences per round")
    p.add_argument("--seq-len", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is shown")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ids, labels = make_data(args.samples, args.seq_len)
    print(f"{args.samples:,} sequences x {args.seq_len} tokens, batch {BATCH}, "
          f"{torch.get_num_threads()} threads, lmforge {args.precision}")
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.models.split(","):
            plain, ours = [], []
            for _ in range(args.rounds):
                plain.append(time_plain(cell, ids, labels))
                ours.append(time_lmforge(cell, ids, labels, Path(tmp), args.precision))
            p_med, o_med = statistics.median(plain), statistics.median(ours)
            name = "SimpleRNN" if cell == "rnn" else "LSTM"
            print(f"{name:9s}  plain PyTorch {p_med:7,.0f}/s   lmforge {o_med:7,.0f}/s   "
                  f"lmforge/plain {o_med / p_med:.2f}   lmforge/Keras {o_med / KERAS[cell]:.2f}   "
                  f"plain/Keras {p_med / KERAS[cell]:.2f}   (Keras {KERAS[cell]:,.0f}/s)")


if __name__ == "__main__":
    main()
