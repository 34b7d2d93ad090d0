"""The non-Transformer backbones under one contract: shapes, causality, state, masks, learning."""

import logging
import math

import pytest
import torch

from lmforge.config import ConfigError, ModelConfig
from lmforge.models.build import build_backbone, build_model


V = 13
CAUSAL = ["bigram", "mlp", "rnn", "lstm", "gru", "cnn", "rcnn"]
STATEFUL = ["mlp", "rnn", "lstm", "gru", "cnn", "rcnn"]  # bigram needs no state
RECURRENT = ["rnn", "lstm", "gru"]


def tiny(arch: str, **kw) -> ModelConfig:
    base = dict(arch=arch, vocab_size=V, d_model=16, n_layers=2, max_len=32,
                activation="tanh" if arch in ("rnn", "rcnn", "mlp") else "gelu")
    base.update(kw)
    return ModelConfig(**base)


def _flat(state):
    if state is None:
        return []
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in _flat(s)]


@pytest.mark.parametrize("arch", CAUSAL)
def test_shapes_and_contract(arch):
    backbone = build_backbone(tiny(arch))
    assert backbone.causal is True
    assert isinstance(backbone.embed, torch.nn.Embedding) and backbone.embed.num_embeddings == V
    hidden, _ = backbone(torch.randint(0, V, (3, 10)))
    assert hidden.shape == (3, 10, backbone.out_dim)
    logits, loss = build_model(tiny(arch))(torch.randint(0, V, (3, 10)),
                                          torch.randint(0, V, (3, 10)))
    assert logits.shape == (3, 10, V) and loss.ndim == 0


@pytest.mark.parametrize("arch", CAUSAL)
def test_causality(arch):
    model = build_model(tiny(arch)).eval()
    ids = torch.randint(0, V, (2, 12))
    logits, _ = model(ids)
    for t in range(11):
        changed = ids.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
        logits2, _ = model(changed)
        torch.testing.assert_close(logits[:, :t + 1], logits2[:, :t + 1])
        assert not torch.allclose(logits[:, t + 1:], logits2[:, t + 1:])


@pytest.mark.parametrize("arch", STATEFUL)
def test_two_halves_with_state_equal_one_pass(arch):
    model = build_model(tiny(arch)).eval()
    ids = torch.randint(0, V, (3, 14))
    full, _ = model(ids)
    first, _, state = model(ids[:, :6], return_state=True)
    second, _, _ = model(ids[:, 6:], state=state, return_state=True)
    torch.testing.assert_close(torch.cat([first, second], 1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", CAUSAL)
def test_token_by_token_decoding_equals_full_forward(arch):
    model = build_model(tiny(arch)).eval()
    ids = torch.randint(0, V, (2, 11))
    full, _ = model(ids)
    state, steps = None, []
    for t in range(11):
        out, _, state = model(ids[:, t:t + 1], state=state, return_state=True)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", CAUSAL)
def test_right_padding_changes_nothing_real(arch):
    backbone = build_backbone(tiny(arch)).eval()
    ids = torch.randint(1, V, (3, 9))
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7]).bool()
    hidden, state = backbone(ids.masked_fill(~mask, 0), mask=mask)
    noisy, noisy_state = backbone(ids, mask=mask)  # different tokens under the padding
    for b, length in enumerate(mask.sum(1).tolist()):
        alone, alone_state = backbone(ids[b:b + 1, :length])
        torch.testing.assert_close(hidden[b:b + 1, :length], alone, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(noisy[b:b + 1, :length], alone, atol=1e-5, rtol=1e-4)
        # the state is the state after each row's last real token
        dim = 1 if arch in RECURRENT + ["rcnn"] else 0
        for got, want, got2 in zip(_flat(state), _flat(alone_state), _flat(noisy_state)):
            torch.testing.assert_close(got.narrow(dim, b, 1), want, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(got2.narrow(dim, b, 1), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", CAUSAL)
def test_bidirectional_refused_for_causal_lm(arch):
    with pytest.raises(ConfigError, match="bidirectional"):
        build_model(tiny(arch, bidirectional=True))


@pytest.mark.parametrize("arch", RECURRENT)
def test_bidirectional_encoder(arch):
    backbone = build_backbone(tiny(arch, head="classifier", bidirectional=True)).eval()
    assert backbone.causal is False and backbone.out_dim == 32
    ids = torch.randint(1, V, (2, 8))
    mask = torch.tensor([[1] * 8, [1] * 3 + [0] * 5]).bool()
    hidden, state = backbone(ids, mask=mask)
    assert hidden.shape == (2, 8, 32)
    alone, _ = backbone(ids[1:, :3])
    torch.testing.assert_close(hidden[1:, :3], alone, atol=1e-5, rtol=1e-4)
    # the backward half at position 0 has read the whole row: it sees the future
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % V
    assert not torch.allclose(backbone(changed)[0][0, 0, 16:], backbone(ids)[0][0, 0, 16:])


@pytest.mark.parametrize("arch,kw", [("cnn", {}), ("cnn", {"gated": True}),
                                     ("cnn", {"filter_widths": [3, 4, 5]}), ("rcnn", {}),
                                     ("rcnn", {"cell": "gru"})])
def test_non_causal_variants_see_both_sides_and_ignore_padding(arch, kw):
    backbone = build_backbone(tiny(arch, head="classifier", **kw)).eval()
    assert backbone.causal is False
    widths = kw.get("filter_widths")
    assert backbone.out_dim == (len(widths) * 16 if widths else 16)
    ids = torch.randint(1, V, (2, 9))
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5]).bool()
    hidden, state = backbone(ids, mask=mask)
    assert hidden.shape == (2, 9, backbone.out_dim) and state is None
    alone, _ = backbone(ids[1:, :4])
    torch.testing.assert_close(hidden[1:, :4], alone, atol=1e-5, rtol=1e-4)
    changed = ids.clone()
    changed[:, 2] = (changed[:, 2] + 1) % V
    assert not torch.allclose(backbone(changed)[0][:, 1], backbone(ids)[0][:, 1])


def test_kim_filters_refused_for_causal_lm():
    with pytest.raises(ConfigError, match="filter_widths"):
        build_model(tiny("cnn", filter_widths=[3, 4, 5]))


def test_cnn_receptive_field_is_exposed_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="lmforge.models.cnn"):
        backbone = build_backbone(tiny("cnn", n_layers=3, kernel_size=3))
    assert backbone.receptive_field == 15 and backbone.dilations == [1, 2, 4]
    assert "receptive field 15" in caplog.text
    two = build_backbone(tiny("cnn", n_layers=2, kernel_size=2, dilations=[1, 3]))
    assert two.receptive_field == 5
    with pytest.raises(ConfigError, match="dilations"):
        build_backbone(tiny("cnn", n_layers=3, dilations=[1, 2]))
    # the receptive field is exact: the output at t moves with token t - rf + 1, not t - rf
    backbone.eval()
    ids = torch.randint(0, V, (1, 20))
    for back, moves in ((14, True), (15, False)):
        changed = ids.clone()
        changed[0, 19 - back] = (changed[0, 19 - back] + 1) % V
        same = torch.allclose(backbone(changed)[0][0, 19], backbone(ids)[0][0, 19])
        assert same is not moves


@pytest.mark.parametrize("arch", ["rnn", "cnn", "rcnn", "mlp"])
def test_activation_is_honoured(arch):
    ids = torch.randint(0, V, (2, 6))
    outs = {}
    for act in ("tanh", "relu", "sigmoid", "gelu", "silu"):
        torch.manual_seed(0)
        outs[act] = build_backbone(tiny(arch, activation=act)).eval()(ids)[0]
    for act in ("relu", "sigmoid", "gelu", "silu"):
        assert not torch.allclose(outs[act], outs["tanh"])
    with pytest.raises(ConfigError, match="activation"):
        build_backbone(tiny(arch, activation="swish"))


def test_rnn_uses_fused_kernel_when_it_can():
    assert isinstance(build_backbone(tiny("rnn", activation="relu")).rnn, torch.nn.RNN)
    unrolled = build_backbone(tiny("rnn", activation="silu"))
    assert unrolled.rnn is None and len(unrolled.cells) == 2
    assert isinstance(build_backbone(tiny("lstm")).rnn, torch.nn.LSTM)


def test_mlp_context_window():
    backbone = build_backbone(tiny("mlp", extra={"context": 4})).eval()
    ids = torch.randint(0, V, (1, 10))
    base = backbone(ids)[0]
    for back, moves in ((3, True), (4, False)):
        changed = ids.clone()
        changed[0, 9 - back] = (changed[0, 9 - back] + 1) % V
        assert torch.allclose(backbone(changed)[0][0, 9], base[0, 9]) is not moves
    with pytest.raises(ConfigError, match="context"):
        build_backbone(tiny("mlp", extra={"context": 0}))


def test_bigram_head_is_untied_and_asymmetric():
    model = build_model(tiny("bigram"))
    assert model.lm_head.weight is not model.backbone.embed.weight
    assert model.backbone.out_dim == 17  # d_model + the constant feature (unigram bias)


def _conditional_entropy(ids: torch.Tensor) -> float:
    """Mean -log p(next | current) of the empirical bigram table: a bigram model's floor."""
    counts = torch.zeros(V, V)
    pairs = torch.stack([ids[:, :-1].flatten(), ids[:, 1:].flatten()], 1)
    for a, b in pairs.tolist():
        counts[a, b] += 1
    p = counts / counts.sum(1, keepdim=True).clamp(min=1)
    return float(-sum(math.log(p[a, b]) for a, b in pairs.tolist()) / len(pairs))


@pytest.mark.parametrize("arch", CAUSAL)
def test_overfits_one_batch(arch):
    torch.manual_seed(0)
    kw = {"extra": {"context": 8}} if arch == "mlp" else {}
    model = build_model(tiny(arch, d_model=32, **kw))
    ids = torch.randint(0, V, (4, 17))
    x, y = ids[:, :-1], ids[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    floor = _conditional_entropy(ids) if arch == "bigram" else 0.0
    assert loss.item() < floor + 0.1, f"{arch} reached {loss.item():.3f} (floor {floor:.3f})"


@pytest.mark.parametrize("arch", CAUSAL)
def test_generation_with_state_equals_recomputing_the_prefix(arch):
    from lmforge.generate import generate_ids

    model = build_model(tiny(arch)).eval()
    prompt = [1, 2, 3]
    new = generate_ids(model, prompt, max_new_tokens=8, temperature=0)
    tokens = list(prompt)
    for _ in range(8):  # greedy by re-running the whole sequence every step
        logits, _ = model(torch.tensor([tokens]))
        tokens.append(int(logits[0, -1].argmax()))
    assert new == tokens[len(prompt):]
