"""The bare pieces, no Trainer: a tokenizer, LMBatches, build_model and a hand-written loop.

For readers who want to see what `lmforge.pretrain` wraps. Every lmforge model is a backbone
plus a head, with one contract whatever the architecture:

    hidden, state = model.backbone(ids, mask=None, state=None)   # (B, T, D) and carried state
    logits = model.lm_head(hidden)                                # (B, T, V): the CausalLM head
    logits, loss = model(ids, targets)                            # both, plus cross-entropy

Here an LSTM learns Tiny Shakespeare with a plain AdamW loop, then samples text by carrying
its recurrent state one token at a time (change `arch` to rnn, gru, cnn or mlp: same code).

Time on 2 CPU cores: about 1 minute for the default 1,000 steps (measured: 45 s of CPU on one
thread, val loss 1.71); `--quick`: seconds, on the first 20,000 characters (smoke test).

    python examples/custom_loop.py [--steps 1000]
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.data.corpus import BUNDLED_CORPUS
from lmforge.data.lm_batches import LMBatches
from lmforge.models.build import build_model
from lmforge.tokenizers import train_tokenizer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
parser.add_argument("--quick", action="store_true", help="a small slice of text, a few steps")
args = parser.parse_args()
steps = 30 if args.quick else args.steps

text = BUNDLED_CORPUS.read_text(encoding="utf-8")[: 20_000 if args.quick else None]
tokenizer = train_tokenizer("char", [text])
ids = np.array(tokenizer.encode(text), dtype=np.int64)  # (N,) one id per character
split = int(0.9 * len(ids))
train = LMBatches(ids[:split], block_size=64, batch_size=32, seed=0)  # random windows
val = LMBatches(ids[split:], block_size=64, batch_size=32, seed=1)

torch.manual_seed(0)
model = build_model(ModelConfig(arch="lstm", vocab_size=tokenizer.vocab_size, d_model=256,
                                n_layers=1, max_len=64))
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# the contract, piece by piece, must equal the model's own forward
x, y = train.next()  # (B, T) inputs and (B, T) next-token targets
hidden, state = model.backbone(x)  # (B, T, 256); the LSTM's final (h, c)
logits = model.lm_head(hidden)  # (B, T, V)
assert torch.allclose(F.cross_entropy(logits.flatten(0, 1), y.flatten()), model(x, y)[1])

optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
for step in range(1, steps + 1):
    x, y = train.next()
    logits, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # LSTMs like a clipped gradient
    optimizer.step()
    if step % max(steps // 5, 1) == 0:
        model.eval()
        with torch.no_grad():
            val_loss = np.mean([model(*val.next())[1].item() for _ in range(10)])
        model.train()
        print(f"step {step:5d}  train loss {loss.item():.3f}  val loss {val_loss:.3f}")

# sampling by hand: run the prompt once, then feed one token at a time with the carried state
model.eval()
generator = torch.Generator().manual_seed(0)
prompt = torch.tensor([tokenizer.encode("ROMEO:")])  # (1, T)
new = []
with torch.no_grad():
    logits, _, state = model(prompt, return_state=True, last_only=True)  # (1, 1, V)
    for _ in range(20 if args.quick else 300):
        probs = F.softmax(logits[:, -1] / 0.8, dim=-1)  # (1, V) at temperature 0.8
        token = torch.multinomial(probs, 1, generator=generator)  # (1, 1)
        new.append(token.item())
        logits, _, state = model(token, state=state, return_state=True)  # one step
print("ROMEO:" + tokenizer.decode(new))
