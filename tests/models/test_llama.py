"""The llama backbone: causality, KV cache of the key-value heads only, sliding window, ragged
batches and beams, config errors, LoRA on q/v, bf16, compile, heads, sizing, the arena, and
training from scratch through the CLI (DDP / FSDP in a two-process torchrun job)."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch

from lmforge.cli import main
from lmforge.config import ConfigError, ModelConfig
from lmforge.generate import DecodeOptions
from lmforge.generate.causal import generate_tokens
from lmforge.models.build import build_model, count_parameters
from lmforge.nn.attention import KVCache

V = 37


def tiny(**kw) -> ModelConfig:
    base = dict(arch="llama", vocab_size=V, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                max_len=32)
    base.update(kw)
    return ModelConfig(**base)


VARIANTS = {
    "gqa": {},
    "mqa-untied": {"n_kv_heads": 1, "tie_embeddings": False},
    "qwen2-bias": {"qkv_bias": True},
    "qwen3-qknorm-headdim": {"qk_norm": True, "head_dim": 16},
    "mistral-window": {"sliding_window": 5},
    "llama3-rope": {"rope_theta": 500000.0, "rope_scaling": {
        "type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_len": 16}},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_causality_and_shapes(variant):
    model = build_model(tiny(**VARIANTS[variant])).eval()
    ids = torch.randint(0, V, (2, 12))
    logits, loss = model(ids, ids)
    assert logits.shape == (2, 12, V) and loss.ndim == 0
    for t in (0, 5, 10):
        changed = ids.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
        torch.testing.assert_close(model(changed)[0][:, :t + 1], logits[:, :t + 1])
        assert not torch.allclose(model(changed)[0][:, t + 1:], logits[:, t + 1:])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kv_cache_holds_kv_heads_and_matches_full_forward(variant):
    cfg = tiny(**VARIANTS[variant])
    model = build_model(cfg).eval()
    ids = torch.randint(0, V, (3, 14))
    full, _ = model(ids)
    state = model.backbone.init_state(3)
    assert all(isinstance(c, KVCache) for c in state)
    assert state[0].k.shape == (3, cfg.kv_heads, cfg.max_len, cfg.attn_head_dim)
    first, _, state = model(ids[:, :6], state=state, return_state=True)
    steps = [first]
    for t in range(6, 14):
        out, _, state = model(ids[:, t:t + 1], state=state, return_state=True)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_sliding_window_sees_only_the_last_positions():
    model = build_model(tiny(sliding_window=3, n_layers=1)).eval()
    ids = torch.randint(0, V, (1, 10))
    changed = ids.clone()
    changed[0, 2] = (changed[0, 2] + 1) % V
    a, b = model(ids)[0], model(changed)[0]
    assert not torch.allclose(a[0, 2:5], b[0, 2:5])  # positions 2, 3, 4 see position 2
    torch.testing.assert_close(a[0, 5:], b[0, 5:])  # one layer, window 3: 5.. do not


def test_ragged_batch_and_beams_equal_rows_alone():
    torch.manual_seed(0)
    model = build_model(tiny(sliding_window=6)).eval()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    greedy = DecodeOptions(max_new_tokens=10, temperature=0)
    batch = [h[0].tokens for h in generate_tokens(model, prompts, greedy)]
    alone = [generate_tokens(model, [p], greedy)[0][0].tokens for p in prompts]
    assert batch == alone
    recompute = generate_tokens(model, prompts[:1], DecodeOptions(max_new_tokens=10, temperature=0,
                                                                  use_cache=False))
    assert recompute[0][0].tokens == alone[0]
    beams = generate_tokens(model, prompts[:1], DecodeOptions(max_new_tokens=6, num_beams=3,
                                                              num_samples=3))[0]
    assert len(beams) == 3 and beams[0].score >= beams[-1].score


@pytest.mark.parametrize("change,message", [
    ({"n_kv_heads": 3}, "model.n_kv_heads=3 must divide model.n_heads=4"),
    ({"n_heads": 3, "n_kv_heads": 1}, "model.n_heads=3 does not divide model.d_model=32; set model.head_dim"),
    ({"head_dim": 7}, "model.head_dim=7 must be a positive even number"),
    ({"rope_theta": 0.0}, "model.rope_theta must be positive"),
    ({"rope_scaling": {"type": "yarn", "factor": 2}}, "model.rope_scaling.type='yarn' is not one of linear, llama3"),
    ({"rope_scaling": {"type": "linear"}}, "model.rope_scaling.factor must be a positive number"),
    ({"sliding_window": -1}, "model.sliding_window and model.sliding_window_start must be >= 0"),
])
def test_bad_config_is_a_clear_error(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(tiny(**change))


def test_untied_head_and_scaled_init():
    tied, untied = build_model(tiny(n_layers=4)), build_model(tiny(tie_embeddings=False))
    assert tied.lm_head.weight is tied.backbone.embed.weight
    assert untied.lm_head.weight is not untied.backbone.embed.weight
    block = tied.backbone.blocks[0]
    assert block.attn.o.weight.std() < block.attn.q.weight.std()  # 0.02 / sqrt(2 * n_layers)
    assert block.mlp.down.weight.std() < block.mlp.up.weight.std()
    assert block.attn.k.out_features == 2 * 8  # two key-value heads of width 8


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model(tiny())
    ids = torch.randint(0, V, (4, 17))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(ids[:, :-1], ids[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_lora_on_q_and_v_trains_only_adapters_and_merges():
    from lmforge.nn.lora import (
        apply_lora,
        mark_only_lora_and_head_trainable,
        merge_lora,
    )

    torch.manual_seed(0)
    model = build_model(tiny())
    names = apply_lora(model.backbone, rank=4, alpha=8, targets=["q", "v"])
    assert names == ["blocks.0.attn.q", "blocks.0.attn.v", "blocks.1.attn.q", "blocks.1.attn.v"]
    mark_only_lora_and_head_trainable(model)
    model.lm_head.weight.requires_grad_(False)  # tied to the (frozen) embedding
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    ids = torch.randint(0, V, (4, 17))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(30):
        loss = model(ids[:, :-1], ids[:, 1:])[1]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    model.eval()
    with torch.no_grad():
        before = model(ids)[0]
        merge_lora(model)
        torch.testing.assert_close(model(ids)[0], before, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_is_close_to_fp32():
    torch.manual_seed(0)
    model = build_model(tiny(qk_norm=True)).eval()
    ids = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        ref = model(ids)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids)[0].float()
        cast = model.to(torch.bfloat16)(ids)[0].float()
    assert (low - ref).abs().max().item() < 0.1 and (cast - ref).abs().max().item() < 0.1
    assert model.backbone.blocks[0].attn.rotary.cos.dtype == torch.float32  # angles stay fp32


@pytest.mark.slow  # compiling takes ~90 s on two shared cores
def test_compiled_model_matches_eager():
    torch.manual_seed(0)
    model = build_model(tiny(sliding_window=5)).eval()
    ids = torch.randint(0, V, (2, 16))
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids)[0], model(ids)[0], atol=1e-5, rtol=1e-4)


def test_classifier_head_and_padding():
    cfg = tiny(head="classifier", n_classes=3)
    model = build_model(cfg).eval()
    ids = torch.randint(1, V, (2, 8))
    logits, loss = model(ids, torch.tensor([0, 2]))
    assert logits.shape == (2, 3) and loss.ndim == 0
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], 1)  # left padding
    mask = torch.cat([torch.zeros(2, 3), torch.ones(2, 8)], 1).bool()
    torch.testing.assert_close(model(padded, mask=mask)[0], logits, atol=1e-5, rtol=1e-4)


def test_size_for_params_and_arena_recipe(tmp_path):
    from lmforge.compare import ARCH_DEFAULTS
    from lmforge.models.sizing import size_for_params

    base = dataclasses.replace(tiny(), **ARCH_DEFAULTS["llama"]["model"])
    cfg = size_for_params("llama", 200_000, vocab_size=65, base=base)
    assert abs(count_parameters(build_model(cfg)) - 200_000) <= 0.15 * 200_000
    assert cfg.d_model % cfg.n_heads == 0 and cfg.n_kv_heads == 2


def test_pretrain_from_scratch_learns(tmp_path, tiny_corpus, capsys):
    args = ["pretrain", "--data", str(tiny_corpus), "--out", str(tmp_path / "run"),
            f"data.cache_dir={tmp_path / 'cache'}", "model.arch=llama", "model.n_kv_heads=2",
            "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.max_len=32",
            "train.batch_size=8", "train.max_steps=40", "train.eval_every=20",
            "train.eval_batches=2", "train.progress=false", "train.sample_tokens=20",
            "train.warmup_steps=5"]
    assert main(args) == 0
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    val = [float(r["loss"]) for r in rows if r["split"] == "val"]
    train = [float(r["loss"]) for r in rows if r["split"] == "train"]
    assert val[-1] < val[0] and val[-1] < train[0] - 0.5 and train[0] > 3.0  # ln 35 = 3.56
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "ROMEO:", "--max-new-tokens", "20",
                 "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    # the trained run exports to a folder transformers loads with equal logits
    transformers = pytest.importorskip("transformers")
    from lmforge.run import load_run

    assert main(["convert", "to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    run = load_run(tmp_path / "run", device="cpu")
    ids = torch.tensor([run.tokenizer.encode("ROMEO: my love")])
    with torch.no_grad():
        assert (hf(ids).logits - run.model(ids)[0]).abs().max().item() <= 1e-4
    assert main(["pretrain", "--data", str(tiny_corpus), "--out", str(tmp_path / "bad"),
                 "model.arch=llama", "model.n_kv_heads=3"]) == 1
    assert "model.n_kv_heads=3 must divide model.n_heads=4" in capsys.readouterr().err


@pytest.mark.slow  # two torchrun jobs of two processes: ~30 s on two shared cores
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_llama_matches_one_process(tmp_path, tiny_corpus, torchrun, mode):
    from lmforge.config import load_config
    from lmforge.pretrain import pretrain

    args = ["--data", str(tiny_corpus), "model.arch=llama", "model.n_kv_heads=1",
            "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.max_len=16",
            "train.max_steps=4", "train.eval_every=4", "train.log_every=1", "train.eval_batches=2",
            "train.sample_tokens=8", "train.progress=false", "train.threads=1",
            f"data.cache_dir={tmp_path / 'cache'}", "tokenizer.kind=char",
            *(["train.fsdp=true"] if mode == "fsdp" else [])]
    torchrun(["-m", "lmforge", "pretrain", "--out", tmp_path / "dist", *args, "train.batch_size=2"],
             tmp_path / "lmforge-cache")
    one = load_config(None, [a for a in args if "=" in a] + [f"data.path={tiny_corpus}",
                                                             "train.batch_size=4",
                                                             f"out={tmp_path / 'one'}"])
    pretrain(one, log=lambda *a: None)

    def losses(run):
        with open(run / "metrics.csv") as fh:
            return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "train"}

    a, b = losses(tmp_path / "dist"), losses(tmp_path / "one")
    assert sorted(a) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
