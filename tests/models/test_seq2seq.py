"""Encoder–decoder models: padding, caches, learning to copy / reverse, beam search, GPT init."""

import pytest
import torch

from lmforge.config import ConfigError, ModelConfig
from lmforge.models.build import build_model
from lmforge.models.seq2seq import load_gpt_decoder
from lmforge.tasks.seq2seq import beam_search, block_repeats, greedy_search, max_lengths

PAD, BOS, EOS = 0, 2, 3

VARIANTS = {
    "transformer": dict(arch="transformer"),
    "transformer-copy": dict(arch="transformer", extra={"copy": True}),
    "lstm-luong": dict(arch="lstm", bidirectional=True),
    "lstm-input-feed-copy": dict(arch="lstm", bidirectional=True, d_embed=16,
                                 extra={"input_feed": True, "copy": True}),
    "gru-bahdanau": dict(arch="gru", bidirectional=True, extra={"attention": "bahdanau"}),
    "rnn-luong-dot": dict(arch="rnn", cell="gru", n_layers=1, extra={"attention": "luong_dot"}),
}


def tiny(**kw) -> ModelConfig:
    base = dict(head="seq2seq", vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=24)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_padding_never_changes_another_row(name):
    model = build_model(tiny(**VARIANTS[name])).eval()
    short = torch.randint(4, 40, (1, 4))
    long = torch.randint(4, 40, (1, 9))
    tgt = torch.randint(4, 40, (2, 6))
    src = torch.full((2, 9), PAD)
    src[0, :4], src[1] = short[0], long[0]
    mask = src != PAD
    batched, _ = model(src, tgt, src_mask=mask)
    alone, _ = model(short, tgt[:1])
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-4)
    # whatever sits in the padded positions is invisible
    noisy = src.clone()
    noisy[0, 4:] = torch.randint(4, 40, (5,))
    again, _ = model(noisy, tgt, src_mask=mask)
    torch.testing.assert_close(again, batched, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_decoder_equals_uncached(name):
    model = build_model(tiny(**VARIANTS[name])).eval()
    src = torch.randint(4, 40, (3, 8))
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[1, 5:] = False
    tgt = torch.randint(4, 40, (3, 7))
    logits, _ = model(src, tgt, src_mask=mask)
    full = torch.log_softmax(logits.float(), -1)  # (B, T, V)
    state = model.init_state(model.encode(src, mask))
    steps = []
    for t in range(tgt.size(1)):
        logp, state = model.step(tgt[:, t], state)
        steps.append(logp)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["transformer", "lstm-luong"])
def test_reorder_state_follows_rows(name):
    model = build_model(tiny(**VARIANTS[name])).eval()
    src = torch.randint(4, 40, (2, 6))
    tgt = torch.randint(4, 40, (2, 4))
    state = model.init_state(model.encode(src))
    for t in range(3):
        _, state = model.step(tgt[:, t], state)
    rows = torch.tensor([1, 1, 0])
    state = model.reorder_state(state, rows)
    logp, _ = model.step(tgt[rows, 3], state)
    reference = torch.log_softmax(model(src, tgt)[0][:, 3].float(), -1)
    torch.testing.assert_close(logp, reference[rows], atol=1e-5, rtol=1e-4)


def test_copy_model_outputs_a_distribution():
    model = build_model(tiny(arch="transformer", extra={"copy": True})).eval()
    logits, _ = model(torch.randint(4, 40, (2, 5)), torch.randint(4, 40, (2, 3)))
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(2, 3), atol=1e-4, rtol=1e-4)


def test_label_smoothing_applies_to_training_loss_only():
    model = build_model(tiny(arch="transformer", extra={"label_smoothing": 0.1})).eval()
    src, tgt = torch.randint(4, 40, (2, 5)), torch.randint(4, 40, (2, 4))
    logits, smoothed = model(src, tgt, tgt)
    _, plain = model(src, tgt, tgt, label_smoothing=0.0)
    nll = -torch.log_softmax(logits, -1).gather(-1, tgt[..., None]).mean()
    torch.testing.assert_close(plain, nll)
    assert smoothed > plain


def test_separate_vocabularies_and_bad_configs():
    model = build_model(tiny(arch="transformer", extra={"src_vocab_size": 25}))
    assert model.src_embed.num_embeddings == 25 and model.tgt_embed.num_embeddings == 40
    shared = build_model(tiny(arch="lstm"))
    assert shared.src_embed is shared.tgt_embed is not None
    with pytest.raises(ConfigError, match="copy=true needs one joint"):
        build_model(tiny(arch="lstm", extra={"copy": True, "src_vocab_size": 25}))
    with pytest.raises(ConfigError, match="cannot be a seq2seq model"):
        build_model(tiny(arch="cnn"))
    with pytest.raises(ConfigError, match="extra.attention='concat'"):
        build_model(tiny(arch="gru", extra={"attention": "concat"}))


# --------------------------------------------------------------------------- learning


def _task_batch(n: int, reverse: bool, gen: torch.Generator, vocab: int = 14):
    """Random sequences of 3-7 tokens; the target is the copy (or the reverse) + <eos>."""
    lengths = torch.randint(3, 8, (n,), generator=gen)
    S = int(lengths.max()) + 1
    src = torch.full((n, S), PAD)
    tgt_in = torch.full((n, S), PAD)
    tgt_out = torch.full((n, S), -100)
    for i, L in enumerate(lengths.tolist()):
        x = torch.randint(4, vocab, (L,), generator=gen)
        y = x.flip(0) if reverse else x
        src[i, :L], src[i, L] = x, EOS
        tgt_in[i, 0], tgt_in[i, 1:L + 1] = BOS, y
        tgt_out[i, :L], tgt_out[i, L] = y, EOS
    return src, src != PAD, tgt_in, tgt_out


LEARNERS = {
    "transformer-copy": (dict(arch="transformer", n_layers=1, d_model=64, d_ff=128), False, 250, 3e-3),
    "transformer-reverse": (dict(arch="transformer", n_layers=1, d_model=64, d_ff=128), True, 250, 3e-3),
    "lstm-luong-reverse": (dict(arch="lstm", n_layers=1, d_model=64, bidirectional=True), True, 200, 1e-2),
    "gru-bahdanau-copy": (dict(arch="gru", n_layers=1, d_model=64, bidirectional=True,
                               extra={"attention": "bahdanau"}), False, 200, 1e-2),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learns_to_copy_and_reverse(name):
    kw, reverse, steps, lr = LEARNERS[name]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(tiny(vocab_size=14, max_len=12, **kw))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    for _ in range(steps):
        src, mask, tgt_in, tgt_out = _task_batch(64, reverse, gen)
        loss = model(src, tgt_in, tgt_out, src_mask=mask)[1]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    src, mask, _, tgt_out = _task_batch(200, reverse, gen)
    expected = [[t for t in row if t not in (-100, EOS)] for row in tgt_out.tolist()]
    memory = model.encode(src, mask)
    limits = max_lengths(mask.sum(1) - 1, 1.0, 2, 12)
    greedy = greedy_search(model, memory, limits, BOS, EOS)
    beam = beam_search(model, memory, limits, BOS, EOS, beams=4)
    assert sum(g == e for g, e in zip(greedy, expected)) == len(expected)
    assert sum(b == e for b, e in zip(beam, expected)) == len(expected)


# --------------------------------------------------------------------------- beam search


class ToyModel(torch.nn.Module):
    """A fixed next-token table: log P(next | previous token), no encoder."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table.log()  # (V, V)

    def init_state(self, memory, max_len=None):
        return None

    def step(self, tokens, state):
        return self.table[tokens], state

    def reorder_state(self, state, rows):
        return state


class _Memory:
    def __init__(self, batch: int) -> None:
        self.states = torch.zeros(batch, 1, 1)


def test_beam_search_finds_what_greedy_misses():
    # from <bos>=0: token 1 (0.6) leads to flat continuations; token 2 (0.4) to a sure <eos>.
    # greedy: 1 then eos (0.6 * 0.3 = 0.18); best sequence: 2 then eos (0.4 * 1.0 = 0.4)
    V, eos = 4, 3
    table = torch.full((V, V), 1e-9)
    table[0, 1], table[0, 2] = 0.6, 0.4
    table[1, :] = torch.tensor([1e-9, 0.35, 0.35, 0.3])
    table[2, eos] = 1.0
    table[eos, eos] = 1.0
    table = table / table.sum(-1, keepdim=True)
    model, limits = ToyModel(table), torch.tensor([5])
    assert greedy_search(model, _Memory(1), limits, 0, eos)[0][0] == 1
    assert beam_search(model, _Memory(1), limits, 0, eos, beams=2, length_penalty=0.0) == [[2]]


def test_beam_search_respects_length_limits_per_row():
    V, eos = 5, 4
    table = torch.zeros(V, V)
    table[:, 1] = 1.0  # never wants to stop: <eos> has probability 0 until it is forced
    out = beam_search(ToyModel(table), _Memory(2), torch.tensor([3, 6]), 0, eos, beams=3)
    assert [len(o) for o in out] == [2, 5]  # the limit counts the forced <eos>


def test_block_repeats():
    logp = torch.zeros(2, 6)
    block_repeats(logp, [[1, 2, 5, 1, 2], [3, 4]], 3)
    assert logp[0, 5] == float("-inf") and torch.isfinite(logp[0, :5]).all()
    assert torch.isfinite(logp[1]).all()


def test_max_lengths():
    assert max_lengths(torch.tensor([0, 10, 100]), 1.5, 10, 64).tolist() == [10, 25, 64]


# --------------------------------------------------------------------------- GPT decoder init


def test_gpt_blocks_load_into_the_decoder():
    gpt = build_model(ModelConfig(arch="gpt", vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                                max_len=24))
    model = build_model(tiny(arch="transformer", extra={"dec_layers": 2, "enc_layers": 1}))
    cross_before = model.blocks[0].cross.q.weight.clone()
    loaded = load_gpt_decoder(model, gpt.state_dict())
    assert "blocks.1.mlp.fc.weight" in loaded and "tgt_embed.weight" in loaded
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, gpt.backbone.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(model.ln_f.weight, gpt.backbone.ln_f.weight)
    torch.testing.assert_close(model.blocks[0].cross.q.weight, cross_before)  # fresh
    wide = build_model(tiny(arch="transformer", d_model=64))
    with pytest.raises(ConfigError, match="has shape"):
        load_gpt_decoder(wide, gpt.state_dict())
