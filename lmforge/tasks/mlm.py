"""Masked language modelling, the BERT objective: hide 15 % of the tokens, predict them.

Of the chosen positions 80 % become [MASK], 10 % a random token and 10 % stay as they are
(Devlin et al., 2019, section 3.1): the model cannot tell which visible tokens are corrupted,
so it must keep a good representation of every position. Special tokens ([CLS], [SEP],
<eos>, padding) are never chosen. The loss and the accuracy count chosen positions only.

    lmforge pretrain --config configs/bert-mlm.yaml
    lmforge evaluate runs/bert-mlm --data more_text.txt
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ConfigError
from ..data.lm_batches import LMBatches
from ..eval.metrics import perplexity
from ..models.heads import IGNORE_INDEX

MASK_PROB = 0.15  # share of (non-special) tokens that are predicted
MASK_TOKEN_SHARE = 0.8  # of those: replaced by [MASK]
RANDOM_TOKEN_SHARE = 0.1  # replaced by a random token; the remaining 10 % are kept


def mask_tokens(ids: torch.Tensor, mask_id: int, special: torch.Tensor, generator: torch.Generator,
                mask_prob: float = MASK_PROB) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch for masked-LM training. ids (B, T) -> (inputs (B, T), targets (B, T)).

    `special` is a (V,) bool table, True for ids that are never chosen (nor drawn as random
    replacements). targets hold the original id at chosen positions and IGNORE_INDEX elsewhere.
    At least one position per batch is chosen when any is eligible, so the loss is defined.
    """
    eligible = ~special[ids]  # (B, T)
    draw = torch.rand(ids.shape, generator=generator, device=ids.device)
    chosen = (draw < mask_prob) & eligible  # (B, T)
    if not chosen.any() and eligible.any():  # tiny batch: force one position
        chosen.view(-1)[eligible.view(-1).nonzero()[0]] = True
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    how = torch.rand(ids.shape, generator=generator, device=ids.device)  # which corruption
    to_mask = chosen & (how < MASK_TOKEN_SHARE)
    to_random = chosen & (how >= MASK_TOKEN_SHARE) & (how < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
    normal = (~special).nonzero().squeeze(1)  # (V',) ids a random replacement may take
    random_ids = normal[torch.randint(len(normal), ids.shape, generator=generator, device=ids.device)]
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, targets


def special_table(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """(V,) bool, True at the tokenizer's special ids (never masked, never a random pick)."""
    table = torch.zeros(vocab_size, dtype=torch.bool)
    for i in tokenizer.special_ids.values():
        if 0 <= i < vocab_size:
            table[i] = True
    return table


class MaskedLMTask:
    """Windows of the corpus wrapped as [CLS] tokens [SEP], masked afresh at every batch.

    Same constructor as `LanguageModelingTask`, so the pretraining recipe picks it by head
    (`model.head: masked_lm`). Validation uses the same windows and the same masks at every
    evaluation, so its curve is comparable from one evaluation to the next.
    """

    metric_names = ["accuracy", "ppl"]
    monitor = ("loss", "min")
    keep_best = False

    def __init__(self, model: nn.Module, tokenizer: Any, train_tokens: np.ndarray,
                 val_tokens: np.ndarray, block_size: int, batch_size: int, seed: int = 0,
                 eval_batches: int = 20, tbptt: bool = False, sample_tokens: int = 200,
                 device: torch.device | str = "cpu") -> None:
        if tbptt:
            raise ConfigError("train.tbptt does not apply to masked-LM training (an encoder "
                              "carries no state between windows); set train.tbptt=false")
        if getattr(model, "causal", False):
            raise ConfigError("masked-LM training needs a bidirectional encoder (model.arch=bert); "
                              "this backbone is causal")
        if tokenizer.mask_id is None:
            raise ConfigError("masked-LM training needs a tokenizer with a [MASK] token "
                              "(tokenizer.kind=wordpiece)")
        self.model, self.tokenizer, self.device = model, tokenizer, torch.device(device)
        self.mask_id = tokenizer.mask_id
        self.cls_id, self.sep_id = tokenizer.cls_id, tokenizer.sep_id
        body = block_size - (self.cls_id is not None) - (self.sep_id is not None)
        if body < 1:
            raise ConfigError(f"model.max_len={block_size} leaves no room between [CLS] and [SEP]")
        vocab = model.config.vocab_size
        self.special = special_table(tokenizer, vocab)
        if bool(self.special.all()):
            raise ConfigError("the tokenizer has only special tokens; nothing to mask")
        # windows are cut and masked on the CPU (a CPU generator makes the masks reproducible
        # and resumable on any device), then moved
        self.train = LMBatches(train_tokens, body, batch_size, seed=seed)
        self.val = LMBatches(val_tokens, body, batch_size, seed=seed + 1)
        self.val_start = self.val.state_dict()
        self.rng = torch.Generator().manual_seed(seed)
        self.val_seed = seed + 2
        self.eval_batches = eval_batches
        self.sample_tokens = sample_tokens

    # ------------------------------------------------------------------ batches

    def _wrap(self, body: torch.Tensor) -> torch.Tensor:
        """(B, T') -> (B, T) with [CLS] in front and [SEP] at the end when the tokenizer has them."""
        B = body.size(0)
        parts = [body]
        if self.cls_id is not None:
            parts.insert(0, torch.full((B, 1), self.cls_id, dtype=body.dtype))
        if self.sep_id is not None:
            parts.append(torch.full((B, 1), self.sep_id, dtype=body.dtype))
        return torch.cat(parts, dim=1)

    def _batch(self, sampler: LMBatches, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self._wrap(sampler.next()[0])  # (B, T)
        inputs, targets = mask_tokens(ids, self.mask_id, self.special, generator)
        return inputs.to(self.device), targets.to(self.device)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batch(self.train, self.rng)

    def batch_tokens(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return batch[0].numel()

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        inputs, targets = batch  # (B, T), (B, T)
        # project only the masked positions to the vocabulary: same loss, ~6x fewer logits
        return (self.model if model is None else model)(inputs, targets, masked_only=True)[1]

    # ------------------------------------------------------------------ metrics

    def evaluate(self) -> dict[str, float]:
        self.val.load_state_dict(self.val_start)
        generator = torch.Generator().manual_seed(self.val_seed)
        batches = (self._batch(self.val, generator) for _ in range(self.eval_batches))
        return masked_lm_metrics(self.model, batches)

    def on_evaluate(self, step: int, run_dir: Path) -> None:
        """Append one validation window with its masks filled in to samples.txt."""
        if not self.sample_tokens:
            return
        self.val.load_state_dict(self.val_start)
        generator = torch.Generator().manual_seed(self.val_seed)
        inputs, targets = self._batch(self.val, generator)
        inputs, targets = inputs[:1], targets[:1]  # (1, T)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            logits, _ = self.model(inputs)  # (1, T, V)
        self.model.train(was_training)
        chosen = targets != IGNORE_INDEX
        filled = torch.where(chosen, logits.argmax(-1), inputs)
        decode = lambda t: self.tokenizer.decode(t[0].tolist(), skip_special=False)  # noqa: E731
        with open(Path(run_dir) / "samples.txt", "a", encoding="utf-8") as fh:
            fh.write(f"===== step {step} =====\n"
                     f"input:     {decode(inputs)}\n"
                     f"predicted: {decode(filled)}\n"
                     f"original:  {decode(torch.where(chosen, targets, inputs))}\n\n")

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train.state_dict(), "mask_rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train.load_state_dict(state["train"])
        self.rng.set_state(state["mask_rng"])


@torch.no_grad()
def masked_lm_metrics(model: nn.Module, batches) -> dict[str, float]:
    """Loss (mean over masked tokens), masked-token accuracy and perplexity over batches of
    (inputs, targets)."""
    total_loss, correct, count = 0.0, 0, 0
    for inputs, targets in batches:
        logits, loss = model(inputs, targets, masked_only=True)  # (N, V)
        n = int((targets != IGNORE_INDEX).sum())
        total_loss += float(loss) * n
        correct += int((logits.argmax(-1) == targets[targets != IGNORE_INDEX]).sum())
        count += n
    if count == 0:
        raise ConfigError("no maskable tokens in the evaluation data")
    loss = total_loss / count
    return {"loss": loss, "accuracy": correct / count, "ppl": perplexity(loss)}


# --------------------------------------------------------------------------- lmforge evaluate


def evaluate_cli(argv: list[str]) -> int:
    """lmforge evaluate RUN --data PATH: masked-LM loss, accuracy and perplexity on a corpus."""
    parser = argparse.ArgumentParser(
        prog="lmforge evaluate", description="Score a masked-LM run: 15 % of the tokens of every "
        "window are masked (80/10/10) with a fixed seed; reports loss, masked-token accuracy and "
        "perplexity over the masked tokens.")
    parser.add_argument("run", help="run directory (model.head = masked_lm)")
    parser.add_argument("--data", required=True, help="text file, folder, glob or .jsonl")
    parser.add_argument("--split", help="with a folder: score only its NAME.txt / NAME.jsonl / NAME/")
    parser.add_argument("--text-field", default="text", help="JSONL field holding the text")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-batches", type=int, default=0, help="0 = every window of the data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.max_batches < 0:
        raise ConfigError("--batch-size must be >= 1 and --max-batches >= 0")
    from ..data.corpus import corpus_split, resolve_corpus_files, tokenize_corpus
    from ..run import load_run

    args.data = corpus_split(args.data, args.split)
    run = load_run(args.run, device=args.device)
    if run.model_config.head != "masked_lm":
        raise ConfigError(f"{args.run}: model.head={run.model_config.head!r}, not masked_lm")
    corpus = tokenize_corpus(resolve_corpus_files(args.data), run.tokenizer, val_fraction=0.0,
                             text_field=args.text_field)
    metrics = evaluate_tokens(run.model, run.tokenizer, np.asarray(corpus.train),
                              args.batch_size, args.max_batches, args.seed)
    print(f"{args.run} on {args.data}: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0


def evaluate_tokens(model: nn.Module, tokenizer: Any, tokens: np.ndarray, batch_size: int = 16,
                    max_batches: int = 0, seed: int = 0) -> dict[str, float | int]:
    """Masked-LM metrics over consecutive, non-overlapping windows of `tokens`."""
    device = next(model.parameters()).device
    cls_id, sep_id, mask_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id
    if mask_id is None:
        raise ConfigError("the run's tokenizer has no [MASK] token")
    body = model.config.max_len - (cls_id is not None) - (sep_id is not None)
    n_windows = len(tokens) // body
    if n_windows == 0:
        raise ConfigError(f"the data has {len(tokens)} tokens, fewer than one window of {body}")
    special = special_table(tokenizer, model.config.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    windows = torch.from_numpy(tokens[: n_windows * body].astype(np.int64)).view(n_windows, body)
    n_batches = math.ceil(n_windows / batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)

    def batches():
        for b in range(n_batches):
            ids = windows[b * batch_size:(b + 1) * batch_size]  # (B, T')
            cols = ([torch.full((len(ids), 1), cls_id)] if cls_id is not None else []) + [ids] + \
                   ([torch.full((len(ids), 1), sep_id)] if sep_id is not None else [])
            inputs, targets = mask_tokens(torch.cat(cols, 1), mask_id, special, generator)
            yield inputs.to(device), targets.to(device)

    model.eval()
    metrics: dict[str, float | int] = dict(masked_lm_metrics(model, batches()))
    metrics["windows"] = min(n_windows, n_batches * batch_size)
    return metrics
