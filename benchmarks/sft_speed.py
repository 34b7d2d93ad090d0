"""LoRA SFT speed and memory: lmforge vs transformers + PEFT on the same model and batches.

    python benchmarks/sft_speed.py                            # SmolLM2-135M-Instruct, 2 rounds
    python benchmarks/sft_speed.py --steps 3 --rounds 1 --batch 2 --seq 64   # a quick look
    python benchmarks/sft_speed.py --seq 128     # short rows (drops the conversations cut short)

Both sides train LoRA adapters (same rank, alpha, targets q,k,v,o,gate,up,down, no dropout)
on the same model weights (the lmforge run exported with `convert to-hf` for transformers),
the same batches (lmforge's SFT pipeline on instruction data from the shared data: the HF
side receives the identical input / target tensors), with AdamW, gradient clipping 1.0, the
same threads and precision. transformers + PEFT runs the plain loop everyone writes:
`get_peft_model`, forward, cross-entropy on the assistant tokens, backward, step.
lmforge runs its Trainer's own training step with `finetune sft`'s defaults (train.chunked_ce:
the loss projects only the assistant positions to the vocabulary; `--plain-ce` turns it off).

Each side runs in a fresh process per round, sides alternating, so both see the same
machine state; tokens/s counts the real (unpadded) tokens of the timed steps (after one
warm-up step); peak RSS is the process's high-water mark over the timed steps (reset with
/proc/self/clear_refs after loading, so loading and export are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ["q", "k", "v", "o", "gate", "up", "down"]
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def batches(args: argparse.Namespace):
    """The SFT batches both sides train on: (x, y, real tokens), identical for both."""
    import torch

    from lmforge.chat import ChatTemplate
    from lmforge.tasks.sft_batches import BucketSampler, collate_lm
    from lmforge.tasks.sft_data import encode_split, read_conversations
    from lmforge.tokenizers import load_tokenizer

    run = Path(args.base)
    tok = load_tokenizer(run / "tokenizer.json")
    split = encode_split(read_conversations(args.data), ChatTemplate.from_run(run), tok,
                         args.seq, False, None)
    if args.side is None:  # the parent says once what --seq did to the data
        print(f"{len(split.examples)} conversations kept at --seq {args.seq}: {split.truncated} "
              f"truncated, {split.dropped} of them dropped (no assistant token left)")
    sampler = BucketSampler(split.lengths, args.batch, seed=0)
    out = []
    for _ in range(args.steps + args.warmup):
        rows = [split.examples[i] for i in sampler.next()]
        x, y = collate_lm(rows, tok.pad_id or 0)
        out.append((x, y, sum(len(e.ids) - 1 for e in rows)))
    torch.manual_seed(0)
    return out


def skip_bound(args: argparse.Namespace) -> float:
    """The speed-up that leaving the vocabulary projection out at positions without a loss
    (what train.chunked_ce does) can give at most, all other work equal: matrix FLOPs of a
    step of both sides on the timed batches (forward + input gradient of the frozen
    projections at every position; the output projection at every position for PEFT, at the
    assistant positions only for lmforge; LoRA and attention left out, equal on both)."""
    import json as _json

    cfg = _json.loads((Path(args.base) / "model_config.json").read_text())
    d, V, layers = cfg["d_model"], cfg["vocab_size"], cfg["n_layers"]
    hd = cfg.get("head_dim") or d // cfg["n_heads"]
    kv = cfg.get("n_kv_heads") or cfg["n_heads"]
    ffn = cfg.get("d_ff") or 4 * d
    per_pos = layers * (2 * d * cfg["n_heads"] * hd + 2 * d * kv * hd + 3 * d * ffn)
    data = batches(args)[args.warmup:]
    positions = sum(x.numel() for x, _, _ in data)
    targets = sum(int((y != -100).sum()) for _, y, _ in data)
    theirs = positions * (per_pos + d * V)
    ours = positions * per_pos + targets * d * V
    return theirs / ours


def autocast(precision: str):
    import contextlib

    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def run_lmforge(args: argparse.Namespace) -> dict:
    import torch

    from lmforge.config import TrainConfig
    from lmforge.tasks.llm_recipe import LoRASettings, load_base_model, make_policy
    from lmforge.train.loop import Trainer

    data = batches(args)
    model = make_policy(load_base_model(args.base)[0], "lora",
                        LoRASettings(rank=args.rank, alpha=2 * args.rank, dropout=0.0, targets=TARGETS))

    class Fixed:  # the SFT task's contract over the precomputed batches
        metric_names, monitor = ["ppl"], ("loss", "min")

        def __init__(self) -> None:
            self.model, self.i = model, 0

        def next_batch(self):
            self.i += 1
            return data[self.i - 1]

        def batch_tokens(self, batch):
            return batch[2]

        def loss(self, batch, m=None):
            return (model if m is None else m)(batch[0], batch[1])[1]

    cfg = TrainConfig(max_steps=args.steps + args.warmup, lr=2e-4, warmup_steps=0, weight_decay=0.0,
                      threads=args.threads, precision=args.precision, progress=False,
                      eval_every=0, grad_clip=1.0, chunked_ce=args.chunked_ce,
                      compile=args.compile)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(Fixed(), cfg, tmp, log=lambda *a: None)
        return timed(lambda: trainer._train_step()[0].item(), data, args.warmup)  # the Trainer's own step


def run_hf(args: argparse.Namespace) -> dict:
    import peft
    import torch
    import torch.nn.functional as F
    import transformers

    torch.set_num_threads(args.threads)
    data = batches(args)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank,
                                                       lora_dropout=0.0, target_modules=HF_TARGETS))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    it = iter(data)

    def step():
        x, y, _ = next(it)
        with autocast(args.precision):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return timed(step, data, args.warmup)


def timed(step, data, warmup: int) -> dict:
    first_loss = step()  # warm-up (allocations, thread pools, compiling); equal on both sides
    for _ in range(warmup - 1):
        step()
    reset_peak()
    t0 = time.perf_counter()
    for _ in data[warmup:]:
        step()
    seconds = time.perf_counter() - t0
    tokens = sum(b[2] for b in data[warmup:])
    return {"tokens_per_s": tokens / seconds, "peak_rss_mb": peak_rss_mb(), "seconds": seconds,
            "first_loss": first_loss}


def child(args: argparse.Namespace) -> None:
    result = run_lmforge(args) if args.side == "lmforge" else run_hf(args)
    print("RESULT " + json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description="LoRA SFT: lmforge vs transformers + PEFT.")
    p.add_argument("--base", help="lmforge llama run (default: SmolLM2 from the cache)")
    p.add_argument("--data", help="chat JSONL (default: built from the shared data)")
    p.add_argument("--work", default="runs/sft-speed")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512,
                   help="tokens per example (longer cut; 512 keeps every conversation of the "
                        "default data, 128 drops a third of them: SciTLDR's documents)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--plain-ce", dest="chunked_ce", action="store_false",
                   help="lmforge side: full (B, T, V) logits instead of `finetune sft`'s default "
                        "train.chunked_ce (only the assistant positions projected)")
    p.add_argument("--compile", action="store_true",
                   help="lmforge side: train.compile=true (TorchInductor; use --warmup 3: the "
                        "first steps compile, for the first length and then for any length)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first, on both sides")
    p.add_argument("--side", choices=["lmforge", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--hf", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return child(args)
    sys.path.insert(0, str(HERE))
    from instruct_data import build, smollm2_run

    work = Path(args.work)
    args.base = args.base or str(smollm2_run())
    if not args.data:
        build(work / "data", per_task=200, test_per_task=1)
        args.data = str(work / "data" / "train.jsonl")
    hf_dir = work / "hf"
    if not (hf_dir / "config.json").is_file():
        from lmforge.convert.cli import to_hf

        to_hf(args.base, hf_dir, force=True)
    bound = skip_bound(args)  # also prints what --seq did to the data
    results: dict[str, list[dict]] = {"lmforge": [], "hf": []}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for r in range(args.rounds):
        for side in ("lmforge", "hf"):
            cmd = [sys.executable, __file__, "--side", side, "--hf", str(hf_dir), "--base", args.base,
                   "--data", args.data, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--seq", str(args.seq), "--rank", str(args.rank), "--threads", str(args.threads),
                   "--precision", args.precision, "--warmup", str(args.warmup)]
            cmd += ([] if args.chunked_ce else ["--plain-ce"]) + (["--compile"] if args.compile else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            results[side].append(json.loads(line[0][7:]))
            print(f"round {r + 1} {side}: {results[side][-1]}", flush=True)
    best = {s: max(v["tokens_per_s"] for v in rs) for s, rs in results.items()}
    rss = {s: max(v["peak_rss_mb"] for v in rs) for s, rs in results.items()}
    print(f"\nLoRA SFT, batch {args.batch} x <= {args.seq} tokens, rank {args.rank} on "
          f"{','.join(TARGETS)}, {args.threads} threads, {args.precision}"
          f"{' (lmforge: train.compile=true)' if args.compile else ''}, {args.steps} timed "
          f"steps x {args.rounds} rounds (best round):")
    print("| | tokens/s | peak RSS (MB) |")
    print("| --- | --- | --- |")
    print(f"| lmforge | {best['lmforge']:.1f} | {rss['lmforge']:.0f} |")
    print(f"| transformers + PEFT | {best['hf']:.1f} | {rss['hf']:.0f} |")
    print(f"| ratio | {best['lmforge'] / best['hf']:.2f}x | {rss['lmforge'] / rss['hf']:.2f}x |")
    if args.chunked_ce:
        print(f"ceiling of the ratio from skipping the vocabulary projection off the assistant "
              f"tokens (matrix FLOPs, all else equal): {bound:.2f}x")
    (work / "results.json").write_text(json.dumps({"args": vars(args), **results}, indent=2))


if __name__ == "__main__":
    main()
