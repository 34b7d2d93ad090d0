"""Peak memory and tokens/s of LoRA and full fine-tuning: lmforge's memory techniques side by
side with transformers + PEFT using its own gradient_checkpointing_enable(), and lmforge's
prediction (`lmforge estimate-memory`) beside every measured peak.

    python benchmarks/memory.py                                   # SmolLM2-135M shape, LoRA
    python benchmarks/memory.py --models smollm2,qwen0.5b --modes lora,full --batch 8 --seq 512
    python benchmarks/memory.py --gguf /work/models/SmolLM2-135M-Instruct.Q4_1.gguf

Every configuration runs in a fresh subprocess (peak RSS is a high-water mark of the whole
process: on CPU `ru_maxrss`, on CUDA `max_memory_allocated`), builds the model, trains
`--steps` optimizer steps after one warm-up step on random tokens, and reports its peak and
tokens/s. Models are randomly initialised at the real shapes (memory and speed do not
depend on the values); `--gguf` converts SmolLM2's GGUF with `lmforge convert from-gguf`
first and trains the real weights. Rows:

    peft+gc        transformers + PEFT LoRA (full: plain transformers), gradient checkpointing
    lmforge        lmforge, no memory technique
    +ac            activation checkpointing on every block
    +ac+cce        ... and chunked cross-entropy
    +ac+cce+int8   ... and the frozen base in int8 (lmforge.nn.quant; LoRA only)
    +torchao-int8  torchao's Int8WeightOnlyConfig on the frozen base instead (LoRA only)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    # SmolLM2-135M: 30 layers, d 576, 9 q / 3 kv heads, d_ff 1536, vocab 49152, tied
    "smollm2": dict(arch="llama", vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
                    n_kv_heads=3, d_ff=1536, rope_theta=100000.0, tie_embeddings=True),
    # Qwen2.5-0.5B: 24 layers, d 896, 14 q / 2 kv heads, d_ff 4864, vocab 151936, tied, qkv bias
    "qwen0.5b": dict(arch="llama", vocab_size=151936, d_model=896, n_layers=24, n_heads=14,
                     n_kv_heads=2, d_ff=4864, rope_theta=1000000.0, tie_embeddings=True,
                     qkv_bias=True, norm_eps=1e-6),
}
LORA = dict(rank=16, alpha=32.0)
MMAP_THRESHOLD = 262144  # see --glibc-default and docs/memory.md
PEFT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TECHNIQUES = {  # row -> lmforge train options
    "lmforge": {},
    "+ac": {"activation_checkpointing": True},
    "+ac+cce": {"activation_checkpointing": True, "chunked_ce": True},
    "+ac+cce+int8": {"activation_checkpointing": True, "chunked_ce": True, "base_dtype": "int8"},
    "+torchao-int8": {"activation_checkpointing": True, "chunked_ce": True},
}


def baseline_rss() -> float:
    """RSS once the libraries every training process loads are in (the estimate's runtime row)."""
    import torch._dynamo  # noqa: F401  (optimizers import it on their first use)

    return rss_now()


def rss_now() -> float:
    with open("/proc/self/status") as fh:
        return next(float(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def peak_bytes(device) -> float:
    import torch

    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


# --------------------------------------------------------------------------- workers

def _batches(vocab: int, batch: int, seq: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (batch, seq + 1), generator=g).to(device)


def _train(step_fn, steps: int, tokens: int, device) -> float:
    """One warm-up step, then `steps` timed ones; returns tokens/s."""
    import torch

    step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * tokens / (time.perf_counter() - t0)


def lmforge_worker(job: dict) -> dict:
    import torch

    from lmforge.config import ModelConfig, TrainConfig
    from lmforge.models.build import build_model
    from lmforge.nn.lora import apply_lora, mark_only_lora_trainable
    from lmforge.train.activation_checkpointing import apply_memory_options
    from lmforge.train.checkpoint import load_weights
    from lmforge.train.loop import autocast_context
    from lmforge.train.optim import build_optimizer

    device = torch.device(job["device"])
    baseline = baseline_rss()
    cfg = ModelConfig(**job["shape"], max_len=max(job["seq"], 64))
    train = TrainConfig(batch_size=job["batch"], precision=job["precision"], lr=1e-4,
                        **TECHNIQUES[job["row"]])
    model = build_model(cfg)
    if job.get("weights"):
        load_weights(model, job["weights"])
    model.to(device).train()
    if job["mode"] == "lora":
        apply_lora(model.backbone, **LORA)
        mark_only_lora_trainable(model)
    if job["row"] == "+torchao-int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model.backbone, Int8WeightOnlyConfig(),
                  filter_fn=lambda m, name: name.endswith(".base"))
    apply_memory_options(model, train)
    opt = build_optimizer(model, train, device)
    ids = _batches(cfg.vocab_size, job["batch"], job["seq"], device)
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        with autocast_context(device, job["precision"]):
            loss = model(x, y)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    tps = _train(step, job["steps"], x.numel(), device)
    return {"peak": peak_bytes(device), "tokens_per_s": tps, "baseline": baseline}


def peft_worker(job: dict) -> dict:
    import torch
    import transformers

    device = torch.device(job["device"])
    baseline = baseline_rss()
    s = job["shape"]
    common = dict(vocab_size=s["vocab_size"], hidden_size=s["d_model"],
                  intermediate_size=s["d_ff"], num_hidden_layers=s["n_layers"],
                  num_attention_heads=s["n_heads"], num_key_value_heads=s["n_kv_heads"],
                  max_position_embeddings=max(job["seq"], 64), tie_word_embeddings=True,
                  rope_theta=s["rope_theta"], rms_norm_eps=s.get("norm_eps", 1e-5))
    if s.get("qkv_bias"):
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    model.to(device).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if job["mode"] == "lora":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(
            r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
            target_modules=PEFT_TARGETS))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = _batches(s["vocab_size"], job["batch"], job["seq"], device)[:, :-1]
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if job["precision"] == "bf16"
                else torch.autocast(device.type, enabled=False))

    def step():
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    tps = _train(step, job["steps"], ids.numel(), device)
    return {"peak": peak_bytes(device), "tokens_per_s": tps, "baseline": baseline}


# --------------------------------------------------------------------------- parent

def predicted(job: dict, baseline: float) -> float | None:
    """lmforge's estimate for an lmforge row (the runtime row = the worker's RSS before the model)."""
    if job["row"] in ("peft+gc", "+torchao-int8"):
        return None
    from lmforge.config import ModelConfig, TrainConfig
    from lmforge.memory.estimate import estimate_memory

    cfg = ModelConfig(**job["shape"], max_len=max(job["seq"], 64))
    train = TrainConfig(batch_size=job["batch"], precision=job["precision"], **TECHNIQUES[job["row"]])
    runtime = baseline if job["device"] == "cpu" else 0.0
    return estimate_memory(cfg, train, job["batch"], job["seq"], mode=job["mode"],
                           device=job["device"], runtime_bytes=runtime, lora=LORA,
                           loads_weights=bool(job.get("weights"))).peak


def run_job(job: dict, threads: int, glibc_default: bool = False) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    if not glibc_default:  # blocks over 256 KiB mmapped, so freed memory leaves RSS at once
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def convert_gguf(path: str) -> str | None:
    """SmolLM2's GGUF -> an lmforge run in the cache (once); its model.safetensors path."""
    from lmforge.cache import cache_root

    out = cache_root() / "benchmarks" / "smollm2-135m-instruct"
    if not (out / "model.safetensors").is_file():
        proc = subprocess.run([sys.executable, "-m", "lmforge", "convert", "from-gguf", path,
                               "--out", str(out)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            print(f"from-gguf failed ({proc.stderr.strip()[-200:]}); random weights instead")
            return None
    return str(out / "model.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2", help="comma list of " + ", ".join(SHAPES))
    parser.add_argument("--modes", default="lora", help="lora, full or both (comma list)")
    parser.add_argument("--rows", default="peft+gc,lmforge,+ac,+ac+cce,+ac+cce+int8",
                        help="comma list of " + ", ".join(["peft+gc", *TECHNIQUES]))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gguf", help="SmolLM2-135M-Instruct GGUF: train its real weights")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--glibc-default", action="store_true",
                        help=f"leave glibc's malloc as it is (default: every process, PEFT's "
                             f"too, runs with MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD})")
    args = parser.parse_args()
    weights = convert_gguf(args.gguf) if args.gguf else None
    results = []
    print(f"batch {args.batch} x seq {args.seq}, {args.steps} steps after a warm-up, "
          f"{args.precision}, {args.threads} threads, {args.device}; LoRA r {LORA['rank']} on "
          f"q,k,v,o,gate,up,down; AdamW; malloc "
          f"{'glibc default' if args.glibc_default else f'MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}'}")
    print("| model | mode | row | peak MiB | predicted MiB | pred/meas | vs peft+gc | tokens/s | "
          "vs peft+gc |\n|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            ref = None
            for row in args.rows.split(","):
                if mode == "full" and "int8" in row:
                    continue
                job = dict(shape=SHAPES[name], mode=mode, row=row, batch=args.batch,
                           seq=args.seq, steps=args.steps, precision=args.precision,
                           device=args.device,
                           weights=weights if name == "smollm2" and row != "peft+gc" else None)
                res = run_job(job, args.threads, args.glibc_default)
                res.update(model=name, mode=mode, row=row)
                if "error" not in res:
                    res["predicted"] = predicted(job, res["baseline"])
                results.append(res)
                if row == "peft+gc" and "error" not in res:
                    ref = res
                print(_row(res, ref), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _row(res: dict, ref: dict | None) -> str:
    head = f"| {res['model']} | {res['mode']} | {res['row']} |"
    if "error" in res:
        return f"{head} failed: {res['error'][:120]} | | | | | | |"
    mib = res["peak"] / 2**20
    pred = res.get("predicted")
    pred_s = f"{pred / 2**20:.0f} | {pred / res['peak']:.2f}" if pred else "- | -"
    rel_mem = f"{res['peak'] / ref['peak']:.2f}x" if ref else "-"
    rel_tps = f"{res['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
    return f"{head} {mib:.0f} | {pred_s} | {rel_mem} | {res['tokens_per_s']:.0f} | {rel_tps} |"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        job = json.loads(sys.argv[2])
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        worker = peft_worker if job["row"] == "peft+gc" else lmforge_worker
        print(json.dumps(worker(job)))
    else:
        main()
