"""Two-process DDP and FSDP on CPU/gloo, launched by the test through torchrun.

One torchrun job (this file run as a script, see `worker`) trains the same tiny GPT four
ways: DDP straight, DDP stopped and resumed, FSDP straight, FSDP stopped and resumed. The
tests compare those runs with one process that uses the same global batch.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from lmforge.config import ConfigError, load_config
from lmforge.data.corpus import tokenize_corpus
from lmforge.models.build import build_model
from lmforge.tasks.lm import LanguageModelingTask
from lmforge.tokenizers import train_tokenizer
from lmforge.train import distributed
from lmforge.train.checkpoint import load_weights
from lmforge.train.loop import Trainer

MICRO_BATCH, ACCUM, WORLD, STEPS = 2, 2, 2, 8
OVERRIDES = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.max_len=16",
             "model.dropout=0.0", f"train.grad_accum={ACCUM}", f"train.max_steps={STEPS}",
             "train.eval_every=4", "train.log_every=1", "train.eval_batches=2",
             "train.warmup_steps=2", "train.progress=false", "train.sample_tokens=8",
             "train.threads=1"]


def make_trainer(corpus_path: Path, run_dir: Path, batch_size: int, rank: int = 0,
                 world_size: int = 1, resume: bool = False, extra: tuple[str, ...] = ()) -> Trainer:
    """A tiny GPT on a char corpus; every rank seeds alike and takes its slice of the batch."""
    cfg = load_config(None, [*OVERRIDES, f"train.batch_size={batch_size}", *extra])
    tok = train_tokenizer("char", [corpus_path.read_text()])
    with distributed.local_main_first():
        corpus = tokenize_corpus([corpus_path], tok, 0.1, cache_dir=corpus_path.parent / "cache")
    cfg.model.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg.model)
    task = LanguageModelingTask(model, tok, corpus.train, corpus.val, 16, batch_size, seed=1,
                                eval_batches=2, sample_tokens=cfg.train.sample_tokens,
                                rank=rank, world_size=world_size)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(task, cfg.train, run_dir, resume=resume, log=lambda *a: None)


def train_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "metrics.csv") as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh) if r["split"] == "train"}


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def worker(out: Path, corpus: Path) -> None:
    """One rank of the torchrun job. Rank r trains into out/<name>-rank<r>: rank 1's folders
    must stay absent, which proves that rank 0 alone writes the run directory."""
    info = distributed.setup("cpu")
    r = info.rank
    for mode, extra in (("ddp", ()), ("fsdp", ("train.fsdp=true",))):
        straight = make_trainer(corpus, out / f"{mode}-rank{r}", MICRO_BATCH, r, WORLD, extra=extra)
        straight.fit()
        if mode == "ddp":  # every rank's copy of the weights, to compare them
            torch.save(flat_params(straight.model), out / f"ddp-params-rank{r}.pt")
        run = out / f"{mode}-resumed-rank{r}"
        make_trainer(corpus, run, MICRO_BATCH, r, WORLD, extra=extra).fit(until_step=STEPS // 2)
        resumed = make_trainer(corpus, run, MICRO_BATCH, r, WORLD, resume=True, extra=extra)
        assert resumed.step == STEPS // 2
        resumed.fit()
    distributed.cleanup()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, torchrun) -> Path:
    """Launch the two-process job once; the tests below read what it left."""
    out = tmp_path_factory.mktemp("dist")
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(f"ROMEO: my love is {['true', 'blind', 'sweet'][i % 3]} as the "
                                f"night; JULIET: the {['moon', 'sun', 'star'][i % 3]} doth shine."
                                for i in range(300)) + "\n")
    torchrun([__file__, "--worker", out, corpus], out / "lmforge-cache", timeout=170, nproc=WORLD)
    return out


@pytest.fixture(scope="module")
def single(runs) -> Trainer:
    """One process, batch = the global micro-batch (2 ranks x 2 rows), same accumulation."""
    trainer = make_trainer(runs / "corpus.txt", runs / "single", MICRO_BATCH * WORLD)
    trainer.fit()
    return trainer


def test_ddp_loss_curve_equals_one_process_with_the_global_batch(runs, single):
    ddp, one = train_losses(runs / "ddp-rank0"), train_losses(runs / "single")
    assert sorted(ddp) == sorted(one) == list(range(1, STEPS + 1))
    for step in one:
        assert abs(ddp[step] - one[step]) < 1e-5, (step, ddp[step], one[step])


def test_ddp_ranks_end_with_identical_parameters_equal_to_one_process(runs, single):
    p0 = torch.load(runs / "ddp-params-rank0.pt", weights_only=True)
    p1 = torch.load(runs / "ddp-params-rank1.pt", weights_only=True)
    assert torch.equal(p0, p1)
    torch.testing.assert_close(p0, flat_params(single.model), atol=1e-5, rtol=0)


def test_rank0_alone_writes_the_run_directory(runs, single):
    for name in ("ddp", "ddp-resumed", "fsdp", "fsdp-resumed"):
        assert not (runs / f"{name}-rank1").exists(), name
        files = {p.name for p in (runs / f"{name}-rank0").iterdir()}
        assert {"model.safetensors", "trainer_state.pt", "metrics.csv", "samples.txt"} <= files \
            or name.startswith("fsdp")  # FSDP skips samples (the hook would need every rank)
    assert not list(runs.glob("**/*.tmp"))


def test_ddp_resume_under_the_same_world_size_is_exact(runs, single):
    a, b = train_losses(runs / "ddp-rank0"), train_losses(runs / "ddp-resumed-rank0")
    assert sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert abs(a[step] - b[step]) < 1e-6, step


def test_resume_with_another_world_size_is_a_clear_error(runs, single):
    with pytest.raises(ConfigError, match="trained by 2 process.*same world size"):
        make_trainer(runs / "corpus.txt", runs / "ddp-rank0", MICRO_BATCH * WORLD, resume=True)


def test_fsdp_trains_like_one_process_and_resumes(runs, single):
    fsdp, one = train_losses(runs / "fsdp-rank0"), train_losses(runs / "single")
    for step in one:
        assert abs(fsdp[step] - one[step]) < 1e-5, (step, fsdp[step], one[step])
    resumed = train_losses(runs / "fsdp-resumed-rank0")
    for step in one:
        assert abs(resumed[step] - fsdp[step]) < 1e-5, step
    # the gathered full weights load into a plain model and match the single process
    model = build_model(single.model.config)
    load_weights(model, runs / "fsdp-rank0" / "model.safetensors")
    torch.testing.assert_close(flat_params(model), flat_params(single.model), atol=1e-5, rtol=0)


def test_torchrun_pretrain_cli_matches_one_process(runs, torchrun):
    """`torchrun -m lmforge pretrain`: rank 0 trains the tokenizer and fills the token cache,
    prints the global batch, writes the run; the curve equals one process with batch x 2."""
    from lmforge.pretrain import pretrain

    args = ["--data", str(runs / "corpus.txt"), "model.d_model=32", "model.n_layers=1",
            "model.n_heads=2", "model.max_len=16", "model.dropout=0.0", "train.max_steps=4",
            "train.eval_every=4", "train.log_every=1", "train.eval_batches=2",
            "train.sample_tokens=8", "train.progress=false", "train.threads=1",
            f"data.cache_dir={runs / 'cli-cache'}", "tokenizer.kind=char"]
    proc = torchrun(["-m", "lmforge", "pretrain", "--out", runs / "cli", *args, "train.batch_size=2"],
                    runs / "lmforge-cache", nproc=WORLD)
    assert proc.stdout.count("x world 2 x context 16") == 1  # printed once, by rank 0
    assert {"config.yaml", "tokenizer.json", "model.safetensors", "samples.txt"} <= \
        {p.name for p in (runs / "cli").iterdir()}
    one = load_config(None, [a for a in args if "=" in a] + [f"data.path={runs / 'corpus.txt'}",
                                                             "train.batch_size=4",
                                                             f"out={runs / 'cli-one'}"])
    pretrain(one, log=lambda *a: None)
    a, b = train_losses(runs / "cli"), train_losses(runs / "cli-one")
    assert sorted(a) == list(range(1, 5))
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])


def test_fsdp_names_what_cannot_run():
    cfg = load_config(None, ["train.optimizer=lbfgs"]).train
    assert "cannot shard train.optimizer=lbfgs" in distributed.fsdp_problem(torch.device("cpu"), cfg)
    msg = distributed.fsdp_problem(torch.device("mps"), load_config(None, []).train)
    assert msg.startswith("train.fsdp=true runs on CUDA (nccl) or CPU (gloo), not on mps")
    assert distributed.fsdp_problem(torch.device("cpu"), load_config(None, []).train) is None


def test_collectives_are_no_ops_in_one_process():
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(t) is t
    assert distributed.any_rank(True, False) == [True, False]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.gather_objects(3) == [3]
    with distributed.local_main_first():
        distributed.barrier()


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(Path(sys.argv[2]), Path(sys.argv[3]))


def test_torchrun_seq2seq_matches_one_process_with_accumulation(runs, torchrun):
    """`torchrun -m lmforge finetune seq2seq`: each step the ranks take consecutive batches of
    one shared stream, so 2 ranks equal one process with grad_accum 2, across epoch ends."""
    from lmforge.tasks.seq2seq import finetune

    data = runs / "pairs"
    data.mkdir()
    words = "red blue green cat dog runs jumps the a big small house tree".split()
    for split, n in (("train", 90), ("val", 12)):
        src = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(2 + i % 5)) for i in range(n)]
        (data / f"{split}.xx").write_text("\n".join(src) + "\n")
        (data / f"{split}.yy").write_text("\n".join(s.upper() for s in src) + "\n")
    tiny = ["model.arch=transformer", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
            "model.d_ff=64", "model.max_len=16", "model.dropout=0", "model.extra.label_smoothing=0",
            "tokenizer.kind=word", "tokenizer.vocab_size=60", "train.lr=3e-3", "train.warmup_steps=2",
            "train.progress=false", "train.threads=1", "train.max_steps=8", "train.eval_every=8",
            "train.log_every=1", "train.batch_size=16"]  # 90 pairs: 6 batches, an epoch every 3 steps
    torchrun(["-m", "lmforge", "finetune", "seq2seq", "--task", "translate", "--data", data,
              "--src", "xx", "--tgt", "yy", "--out", runs / "s2s-ddp", *tiny],
             runs / "lmforge-cache", nproc=WORLD)
    finetune(task="translate", data=data, src="xx", tgt="yy", out=runs / "s2s-one",
             overrides=[*tiny, "train.grad_accum=2"], log=lambda *a: None)
    a, b = train_losses(runs / "s2s-ddp"), train_losses(runs / "s2s-one")
    assert sorted(a) == list(range(1, 9))
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
