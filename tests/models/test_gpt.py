import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.models.build import build_model


def tiny(**kw) -> ModelConfig:
    base = dict(arch="gpt", vocab_size=37, d_model=32, n_layers=2, n_heads=4, max_len=16)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_causality(positional):
    model = build_model(tiny(positional=positional)).eval()
    ids = torch.randint(0, 37, (2, 12))
    logits, _ = model(ids)
    for t in range(11):
        changed = ids.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % 37
        logits2, _ = model(changed)
        torch.testing.assert_close(logits[:, : t + 1], logits2[:, : t + 1])
        assert not torch.allclose(logits[:, t + 1:], logits2[:, t + 1:])


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_kv_cache_matches_full_forward(positional):
    model = build_model(tiny(positional=positional)).eval()
    ids = torch.randint(0, 37, (3, 10))
    full, _ = model(ids)
    state = model.backbone.init_state(3)
    first, _, state = model(ids[:, :4], state=state, return_state=True)
    steps = [first]
    for t in range(4, 10):
        out, _, state = model(ids[:, t:t + 1], state=state, return_state=True)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_padding_mask_does_not_change_real_positions():
    model = build_model(tiny()).eval()
    ids = torch.randint(1, 37, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], 1).bool()
    a, _ = model(ids)
    b, _ = model(padded, mask=mask)
    torch.testing.assert_close(a, b[:, :6], atol=1e-5, rtol=1e-4)


def test_weight_tying_and_scaled_init():
    model = build_model(tiny(n_layers=4))
    assert model.lm_head.weight is model.backbone.embed.weight
    proj = model.backbone.blocks[0].attn.proj.weight
    fc = model.backbone.blocks[0].mlp.fc.weight
    assert proj.std() < fc.std()  # residual projections get 0.02 / sqrt(2 * n_layers)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model(tiny())
    ids = torch.randint(0, 37, (4, 16))
    x, y = ids[:, :-1], ids[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = model(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_context_too_long_is_an_error():
    model = build_model(tiny())
    with pytest.raises(ValueError, match="longer than model.max_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
