"""The Classifier head on a llama backbone: last non-pad token pooling, LoRA fine-tuning."""

from __future__ import annotations

import json
import random

import torch

from lmforge.cli import main
from lmforge.config import ModelConfig
from lmforge.models.build import build_model

from .sft_helpers import make_base


def test_last_token_pooling_ignores_padding_on_either_side():
    cfg = ModelConfig(arch="llama", head="classifier", vocab_size=50, d_model=32, n_layers=2,
                      n_heads=4, n_kv_heads=2, max_len=32, n_classes=3,
                      extra={"lora": {"rank": 2, "targets": ["q", "v", "down"]}})
    model = build_model(cfg).eval()
    rows = [torch.randint(3, 50, (n,)) for n in (9, 5, 7)]
    alone = torch.cat([model(r[None])[0] for r in rows])  # (3, K), no padding at all
    right = torch.zeros(3, 9, dtype=torch.long)
    left = torch.zeros(3, 9, dtype=torch.long)
    mask_r, mask_l = torch.zeros(3, 9, dtype=torch.bool), torch.zeros(3, 9, dtype=torch.bool)
    for i, r in enumerate(rows):
        right[i, :len(r)], mask_r[i, :len(r)] = r, True
        left[i, 9 - len(r):], mask_l[i, 9 - len(r):] = r, True
    torch.testing.assert_close(model(right, mask=mask_r)[0], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(left, mask=mask_l)[0], alone, atol=1e-5, rtol=1e-5)


def test_classify_with_lora_on_a_llama_base(tmp_path):
    base = make_base(tmp_path / "base", arch="llama")
    rng = random.Random(0)
    data = tmp_path / "data"
    data.mkdir()
    for name, n in (("train", 200), ("dev", 40), ("test", 40)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            good = rng.random() < 0.5
            word = rng.choice(["great fun", "loved it", "superb"] if good else ["awful", "boring mess", "hated it"])
            lines.append(f"the film: {word}\t{int(good)}")
        (data / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "clf"
    assert main(["finetune", "classify", "--base", str(base), "--data", str(data), "--out", str(out),
                 "--mode", "lora", "--lora.rank", "4", "--lora.targets", "q,k,v,o,gate,up,down",
                 "--epochs", "3", "--no-merge", "train.threads=1", "train.progress=false",
                 "train.lr=1e-2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dev"]["accuracy"] >= 0.8
    config = json.loads((out / "model_config.json").read_text())
    assert config["arch"] == "llama" and config["pooling"] == "last"
    assert config["extra"]["lora"]["targets"] == ["q", "k", "v", "o", "gate", "up", "down"]
