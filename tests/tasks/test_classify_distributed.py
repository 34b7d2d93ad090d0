"""Classification under torchrun: 2 gloo processes equal one process with the global batch.

The torchrun job runs this file as a script (see `worker`): each rank calls the `lmforge
finetune classify` command line with its own --out, so rank 1's folder must stay absent.
The unit tests check the rank slices of `LabelledBatches` and the FLOPs count of the mfu column.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.config import ConfigError, ModelConfig
from lmforge.data.labelled import LabelledBatches, Share
from lmforge.models.build import build_backbone
from lmforge.models.heads import Classifier

WORLD, MICRO, ACCUM, EPOCHS = 2, 4, 2, 2
N_TRAIN = 41  # 41 = 5 global batches of 8 + 1 row: the ragged batch leaves rank 1 a stand-in
ARGS = ["--epochs", str(EPOCHS), "model.arch=gru", "model.d_model=16", "model.d_embed=16",
        "model.dropout=0.0", "model.max_len=16", f"train.grad_accum={ACCUM}", "train.log_every=1",
        "train.threads=1", "train.progress=false", "train.lr=3e-3", "task.class_weights=balanced",
        "task.eval_batch_size=16"]


def toy_folder(folder: Path) -> Path:
    """Imbalanced (2:1) toy sentiment data of varied lengths, so buckets and weights matter."""
    rng = random.Random(0)
    good, bad, filler = ["good", "great", "fine"], ["bad", "awful", "dull"], ["the", "film", "was",
                                                                            "a", "plot", "very"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", N_TRAIN), ("dev", 12), ("test", 9)):
        lines = ["sentence\tlabel"]
        for i in range(n):
            label = "neg" if i % 3 == 0 else "pos"
            words = rng.choices(filler, k=rng.randint(1, 8))
            words.insert(rng.randint(0, len(words)), rng.choice(bad if label == "neg" else good))
            lines.append(f"{' '.join(words)}\t{label}")
        (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def train_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "metrics.csv") as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "train"}


def record_final_params(module, store: list) -> None:
    """Wrap the classify module's Trainer so that fit() keeps the last weights (rank 0 loads
    the best ones for its final scores afterwards)."""

    class Recording(module.Trainer):
        def fit(self, *args, **kwargs):
            out = super().fit(*args, **kwargs)
            store.append(torch.cat([p.detach().flatten() for p in self.model.parameters()]).clone())
            return out

    module.Trainer = Recording


def worker(out: Path) -> None:
    """One rank: the CLI with this rank's own --out; its final parameters go to out/."""
    import lmforge.tasks.classify as classify
    from lmforge.train import distributed

    rank = distributed.current().rank
    params: list[torch.Tensor] = []
    record_final_params(classify, params)
    classify.finetune_cli(["--data", str(out / "toy"), "--out", str(out / f"ddp-rank{rank}"),
                           *ARGS, f"train.batch_size={MICRO}"])
    torch.save(params[0], out / f"params-rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, torchrun) -> Path:
    """Launch the two-process job once."""
    out = tmp_path_factory.mktemp("classify-ddp")
    toy_folder(out / "toy")
    proc = torchrun([__file__, "--worker", out], out / "cache", timeout=150, nproc=WORLD)
    (out / "stdout.txt").write_text(proc.stdout)
    return out


@pytest.fixture(scope="module")
def single_run(ddp_run) -> tuple[Path, torch.Tensor]:
    """One process whose batch is the global micro-batch (2 ranks x 4 rows), same accumulation."""
    import lmforge.tasks.classify as classify

    params: list[torch.Tensor] = []
    trainer = classify.Trainer
    record_final_params(classify, params)
    try:
        out = ddp_run / "single"
        classify.finetune_cli(["--data", str(ddp_run / "toy"), "--out", str(out), *ARGS,
                               f"train.batch_size={MICRO * WORLD}"])
    finally:
        classify.Trainer = trainer
    return out, params[0]


def test_ddp_classify_loss_curve_equals_one_process_with_the_global_batch(ddp_run, single_run):
    ddp, one = train_losses(ddp_run / "ddp-rank0"), train_losses(single_run[0])
    steps = EPOCHS * 6 // ACCUM  # ceil(41 / 8) = 6 global batches per epoch
    assert sorted(ddp) == sorted(one) == list(range(1, steps + 1))
    for step in one:
        assert abs(ddp[step] - one[step]) < 1e-5, (step, ddp[step], one[step])


def test_ddp_classify_ranks_end_with_identical_parameters(ddp_run, single_run):
    p0 = torch.load(ddp_run / "params-rank0.pt", weights_only=True)
    p1 = torch.load(ddp_run / "params-rank1.pt", weights_only=True)
    assert torch.equal(p0, p1)
    torch.testing.assert_close(p0, single_run[1], atol=1e-5, rtol=0)


def test_ddp_classify_rank0_alone_writes_and_prints_the_global_batch(ddp_run, single_run):
    assert not (ddp_run / "ddp-rank1").exists()
    files = {p.name for p in (ddp_run / "ddp-rank0").iterdir()}
    assert {"config.yaml", "model_config.json", "tokenizer.json", "labels.json",
            "model.safetensors", "best.safetensors", "trainer_state.pt", "metrics.csv",
            "summary.json", "eval"} <= files
    stdout = (ddp_run / "stdout.txt").read_text()
    assert stdout.count("16 examples per step (batch 4 x accum 2 x world 2)") == 1  # rank 0 only
    with open(ddp_run / "ddp-rank0" / "metrics.csv") as fh:
        val = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    assert [int(r["step"]) for r in val] == [3, 6]  # rank 0 evaluated after each epoch


# --------------------------------------------------------------------------- rank slices


def toy_batches(world: int = 1, rank: int = 0, n: int = 37, micro: int = 4,
                **kwargs) -> LabelledBatches:
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 50, size=int(k)) for k in rng.integers(1, 12, size=n)]
    labels = rng.integers(0, 3, size=n)
    return LabelledBatches(ids, labels, micro, seed=3, pool=2, rank=rank, world_size=world, **kwargs)


@pytest.mark.parametrize("world", [2, 3])
def test_rank_slices_make_up_the_global_batch(world):
    one = toy_batches(micro=4 * world)
    ranks = [toy_batches(world, r) for r in range(world)]
    assert len({len(b) for b in ranks}) == 1 and len(ranks[0]) == len(one)
    for _ in range(2 * len(one) + 1):  # past an epoch boundary
        ids, mask, labels = one.next()
        parts = [b.next() for b in ranks]
        assert all(isinstance(p[3], Share) and p[3].examples == len(labels) for p in parts)
        real = [p for p in parts if p[3].weight > 0]
        width = max(p[0].shape[1] for p in real)
        padded = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
        assert torch.equal(torch.cat([padded(p[0]) for p in real]), padded(ids))
        assert torch.equal(torch.cat([p[2] for p in real]), labels)
        # rank shares: the mean of reweighted per-rank means is the global mean
        loss = torch.rand(len(labels), dtype=torch.float64)
        i, means = 0, []
        for p in parts:
            n = len(p[2]) if p[3].weight > 0 else 0
            means.append(loss[i: i + n].mean() * p[3].weight if n else torch.zeros((), dtype=torch.float64))
            i += n
        torch.testing.assert_close(torch.stack(means).mean(), loss.mean())


def test_fewer_rows_than_ranks_leave_a_stand_in_row_of_weight_zero():
    parts = [toy_batches(2, r, n=9, micro=4, shuffle=False, bucket=False) for r in range(2)]
    assert [len(b) for b in parts] == [2, 2]
    for b in parts:
        b.next()  # one full global batch of 8 ... then the one left-over row
    last = [b.next() for b in parts]
    assert last[0][3] == Share(2.0, 1) and last[1][3] == Share(0.0, 1)
    assert last[1][0].shape[0] == 1  # rank 1 still runs a forward (and joins the all-reduce)


def test_class_weighted_shares_give_the_global_weighted_mean():
    weights = [0.5, 2.0, 1.0]
    one = toy_batches(micro=8, class_weights=weights)
    parts = [toy_batches(2, r, micro=4, class_weights=weights) for r in range(2)]
    w = torch.tensor(weights, dtype=torch.float64)
    for _ in range(len(one)):
        labels = one.next()[2]
        per_row = torch.rand(len(labels), dtype=torch.float64)
        target = (w[labels] * per_row).sum() / w[labels].sum()  # cross_entropy's weighted mean
        i, total = 0, torch.zeros((), dtype=torch.float64)
        for b in parts:
            _, _, y, share = b.next()
            if share.weight:
                total += (w[y] * per_row[i: i + len(y)]).sum() / w[y].sum() * share.weight
                i += len(y)
        torch.testing.assert_close(total / 2, target)


def test_resume_state_keeps_the_world_size():
    a = toy_batches(2, 1)
    a.next()
    state = a.state_dict()
    assert state["world_size"] == 2
    b = toy_batches(2, 1)
    b.load_state_dict(state)
    assert torch.equal(a.next()[0], b.next()[0])
    with pytest.raises(ConfigError, match="saved by 2 process.*this run has 1.*same world size"):
        toy_batches().load_state_dict(state)
    with pytest.raises(ConfigError, match="batch_size=4 but this run uses 8"):
        toy_batches(2, 1, micro=8).load_state_dict(state)
    toy_batches().load_state_dict({"epoch": 1, "cursor": 2})  # states saved before world_size


# --------------------------------------------------------------------------- mfu


def test_flops_per_example_matches_a_hand_count():
    from lmforge.tasks.classify import flops_per_example

    cfg = ModelConfig.from_dict({"arch": "gru", "d_model": 6, "d_embed": 8, "n_layers": 1,
                                 "bidirectional": False, "vocab_size": 20, "head": "classifier",
                                 "n_classes": 3})
    model = Classifier(build_backbone(cfg), cfg)
    lengths = np.array([2, 4])  # mean 3 tokens per example
    # GRU: W_ih 18x8 + W_hh 18x6 + two 18 biases = 288 per token; head 6x3 + 3 = 21 per example
    assert flops_per_example(model, lengths) == 6 * 288 * 3 + 6 * 21
    model.backbone.requires_grad_(False)  # frozen: the backbone runs forward only
    assert flops_per_example(model, lengths) == 2 * 288 * 3 + 4 * 21

    gpt = ModelConfig.from_dict({"arch": "gpt", "d_model": 8, "n_layers": 1, "n_heads": 2,
                                 "vocab_size": 20, "max_len": 8, "head": "classifier",
                                 "n_classes": 2})
    model = Classifier(build_backbone(gpt), gpt)
    from lmforge.train.mfu import matmul_params

    n = matmul_params(model.backbone)  # the token and position tables are lookups
    assert n == sum(p.numel() for p in model.backbone.parameters()) - 20 * 8 - 8 * 8
    # attention: 12 d L per token over each example's own length -> 12 d mean(L^2) = 12*8*10
    assert flops_per_example(model, lengths) == 6 * n * 3 + 12 * 8 * 10 + 6 * (8 * 2 + 2)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(Path(sys.argv[2]))
