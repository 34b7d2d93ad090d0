"""Fine-tune SmolLM2-135M-Instruct with lmforge and compare with it zero-shot.

    python benchmarks/instruct.py                                   # the full measurement
    python benchmarks/instruct.py --per-task 100 --test-per-task 20 --sft-steps 20 \\
        --dpo-steps 10 --clf-train 300 --clf-epochs 1               # a short run (minutes)

Rows (each beside zero-shot SmolLM2-135M-Instruct):
  SST-2 test accuracy of a Classifier head with LoRA on SmolLM2 (`finetune classify
      --mode lora`); zero-shot: the base model's greedy answer to the instruction
  SST-2 accuracy of the SFT model's greedy answer ("positive" / "negative" in the reply)
  SciTLDR ROUGE-1/2/L and Multi30k de->en BLEU of the SFT model's greedy answers
  DPO (on pairs from the same data, starting from the SFT model): held-out pair accuracy
      before (log p(chosen) > log p(rejected) under the SFT model) and the DPO run's reward
      accuracy after (r(chosen) > r(rejected), rewards relative to the SFT model)
Everything is written to WORK/results.json as well; a later run in the same WORK on the same
data (--per-task, --test-per-task) takes the zero-shot row from there instead of recomputing
it (35 minutes on one thread), and an SFT run already in WORK/sft is evaluated, not retrained.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from instruct_data import DATA, build, smollm2_run  # noqa: E402

from lmforge.eval.metrics import bleu, rouge  # noqa: E402
from lmforge.run import load_run  # noqa: E402
from lmforge.tasks.dpo import DPOTask, evaluate_pairs, sequence_logprobs  # noqa: E402
from lmforge.tasks.dpo_data import collate_pairs, encode_pairs, read_pairs  # noqa: E402
from lmforge.tasks.sft_data import read_conversations  # noqa: E402


def greedy_replies(run, conversations, max_new_tokens: int, batch: int = 8) -> list[str]:
    """The run's greedy reply to the user turn of each conversation (chat template, stop at
    the end-of-turn marker)."""
    template = run.chat_template() if callable(getattr(run, "chat_template", None)) else None
    if template is None:
        from lmforge.chat import ChatTemplate

        template = ChatTemplate.from_run(run.path)
    prompts = [template.render(c.messages[:-1], add_generation_prompt=True) for c in conversations]
    replies: list[str] = []
    for start in range(0, len(prompts), batch):
        out = run.generate(prompts[start: start + batch], max_new_tokens=max_new_tokens,
                           temperature=0, stop=list(template.stop_strings))
        replies += [r.strip() for r in out]
    return replies


def sentiment_accuracy(replies: list[str], gold: list[str]) -> float:
    """A reply counts when the first of "positive" / "negative" it names is the gold one."""
    def label(text: str) -> str:
        t = text.lower()
        found = [(t.find(w), w) for w in ("positive", "negative") if w in t]
        return min(found)[1] if found else ""
    return sum(label(r) == g for r, g in zip(replies, gold)) / max(len(gold), 1)


def generation_scores(run, data: Path) -> dict[str, float]:
    """SST-2 accuracy, SciTLDR ROUGE and Multi30k BLEU of greedy replies."""
    out: dict[str, float] = {}
    sst = read_conversations(data / "test-sst2.jsonl")
    out["sst2_answer_acc"] = sentiment_accuracy(greedy_replies(run, sst, 4),
                                                [c.messages[-1]["content"] for c in sst])
    tldr = read_conversations(data / "test-scitldr.jsonl")
    out.update({k: v for k, v in rouge(greedy_replies(run, tldr, 60),
                                       [c.messages[-1]["content"] for c in tldr]).items()})
    mt = read_conversations(data / "test-multi30k.jsonl")
    out["multi30k_bleu"] = bleu(greedy_replies(run, mt, 40), [c.messages[-1]["content"] for c in mt])
    return out


@torch.no_grad()
def likelihood_preference(run, pairs_file: Path) -> float:
    """Share of pairs where the model gives the chosen reply the higher log-likelihood."""
    from lmforge.chat import ChatTemplate

    pairs = encode_pairs(read_pairs(pairs_file), ChatTemplate.from_run(run.path), run.tokenizer,
                         512, None)
    right = 0
    for start in range(0, len(pairs), 8):
        rows = list(range(start, min(start + 8, len(pairs))))
        x, y = collate_pairs(pairs, rows, run.tokenizer.pad_id or 0, run.device)
        logp = sequence_logprobs(run.model, x, y)
        right += int((logp[: len(rows)] > logp[len(rows):]).sum())
    return right / len(pairs)


def classifier_row(base: Path, work: Path, n_train: int, n_test: int, epochs: int,
                   threads: int) -> float:
    """SST-2 test accuracy of a LoRA classifier on the base."""
    from lmforge.tasks.classify import finetune as classify

    folder = work / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    for split, limit in (("train", n_train), ("dev", max(50, n_test)), ("test", n_test)):
        with open(DATA / "sst2" / f"{split}.tsv", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        (folder / f"{split}.tsv").write_text("\n".join(lines[: 1 + (limit or len(lines))]) + "\n")
    out = work / "clf"
    if not (out / "summary.json").is_file():
        classify(str(folder), base=str(base), out=str(out), mode="lora", epochs=epochs,
                 lora={"rank": 16, "alpha": 32, "merge": False},
                 overrides=[f"train.threads={threads}", "train.batch_size=16", "train.lr=5e-4",
                            "train.progress=false", "train.log_every=10"])
    return json.loads((out / "summary.json").read_text())["test"]["accuracy"]


def main() -> None:
    p = argparse.ArgumentParser(description="lmforge fine-tuning of SmolLM2 vs zero-shot.")
    p.add_argument("--base", help="SmolLM2 run (default: fetched and converted into the cache)")
    p.add_argument("--work", default="runs/instruct-bench")
    p.add_argument("--per-task", type=int, default=2000)
    p.add_argument("--test-per-task", type=int, default=200)
    p.add_argument("--sft-steps", type=int, default=600)
    p.add_argument("--dpo-steps", type=int, default=200)
    p.add_argument("--clf-train", type=int, default=0, help="SST-2 training sentences (0 = all)")
    p.add_argument("--clf-epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="SFT batch (DPO takes half as many pairs)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated rows to skip: clf,sft,dpo")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(args.skip.split(","))
    work = Path(args.work)
    base = Path(args.base) if args.base else smollm2_run()
    data = work / "data"
    build(data, args.per_task, args.test_per_task)
    common = [f"train.threads={args.threads}", "train.progress=false", "task.max_len=384",
              "train.log_every=5"]
    results: dict[str, dict] = {"args": vars(args)}
    t0 = time.perf_counter()

    def record(name: str, values: dict) -> None:  # after each stage, so a long run shows progress
        results[name] = values
        results["seconds"] = time.perf_counter() - t0
        (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"{name}: {values} ({results['seconds']:.0f} s)", flush=True)

    earlier = json.loads((work / "results.json").read_text()) if (work / "results.json").is_file() else {}
    same_tests = all(earlier.get("args", {}).get(k) == getattr(args, k) for k in ("per_task", "test_per_task"))
    if same_tests and "zero_shot" in earlier:  # the zero-shot row of an earlier run on the same data
        record("zero_shot", earlier["zero_shot"])
    else:
        zero = load_run(base, device="cpu")
        record("zero_shot", {**generation_scores(zero, data),
                             "pair_pref": likelihood_preference(zero, data / "prefs-test.jsonl")})
        del zero
    if "clf" not in skip:
        record("classifier", {"sst2_test_acc": classifier_row(
            base, work, args.clf_train, args.test_per_task, args.clf_epochs, args.threads)})
    sft_run = work / "sft"
    if "sft" not in skip:
        from lmforge.tasks.sft import finetune as sft

        if not (sft_run / "adapter.safetensors").is_file():
            sft(str(data / "train.jsonl"), base=str(base), out=str(sft_run), val=str(data / "val.jsonl"),
                lora={"rank": 16, "alpha": 32, "merge": False},
                overrides=common + [f"train.max_steps={args.sft_steps}", f"train.batch_size={args.batch}",
                                    f"train.eval_every={max(1, args.sft_steps // 2)}"])
        tuned = load_run(sft_run, device="cpu", weights="last")
        record("sft", {**generation_scores(tuned, data),
                       "pair_pref": likelihood_preference(tuned, data / "prefs-test.jsonl")})
        del tuned
    if "dpo" not in skip and sft_run.is_dir():
        from lmforge.tasks.dpo import finetune as dpo

        dpo_run = work / "dpo"
        if not (dpo_run / "adapter.safetensors").is_file():
            dpo(str(data / "prefs-train.jsonl"), base=str(sft_run), out=str(dpo_run),
                val=str(data / "prefs-test.jsonl"), beta=0.1,
                lora={"rank": 16, "alpha": 32, "merge": False},
                overrides=common + [f"train.max_steps={args.dpo_steps}", f"train.batch_size={max(1, args.batch // 2)}",
                                    f"train.eval_every={args.dpo_steps}", "train.lr=5e-5"])
        with open(dpo_run / "metrics.csv") as fh:
            last = [r for r in csv.DictReader(fh) if r["split"] == "val"][-1]
        record("dpo", {"reward_accuracy_after": float(last["reward_accuracy"]),
                       "reward_margin_after": float(last["reward_margin"])})
    print_table(results)


def print_table(r: dict) -> None:
    z, s = r["zero_shot"], r.get("sft", {})
    fmt = lambda d, k, scale=100: f"{d[k] * scale:.1f}" if k in d else "-"  # noqa: E731
    print("| measure | zero-shot SmolLM2-135M-Instruct | lmforge fine-tuned |")
    print("| --- | --- | --- |")
    clf = r.get("classifier", {})
    print(f"| SST-2 test accuracy, classifier head + LoRA (%) | {fmt(z, 'sst2_answer_acc')} (greedy answer) | {fmt(clf, 'sst2_test_acc')} |")
    print(f"| SST-2 accuracy of the greedy answer (%) | {fmt(z, 'sst2_answer_acc')} | {fmt(s, 'sst2_answer_acc')} (SFT) |")
    for k, name in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
        print(f"| SciTLDR {name} | {fmt(z, k, 1)} | {fmt(s, k, 1)} (SFT) |")
    print(f"| Multi30k de->en BLEU | {fmt(z, 'multi30k_bleu', 1)} | {fmt(s, 'multi30k_bleu', 1)} (SFT) |")
    d = r.get("dpo", {})
    print(f"| held-out pairs: log p(chosen) > log p(rejected) (%) | {fmt(z, 'pair_pref')} | {fmt(s, 'pair_pref')} (SFT, before DPO) |")
    print(f"| DPO reward accuracy on held-out pairs (%) | - | {fmt(d, 'reward_accuracy_after')} (after DPO) |")
    print(f"total {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
