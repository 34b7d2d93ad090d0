"""BERT encoder backbone and masked-LM head: contract, bidirectionality, masks, token types,
weight tying, and learning (parity with transformers lives in tests/convert/test_hf_bert.py)."""

import pytest
import torch

from lmforge.config import ConfigError, ModelConfig
from lmforge.models.bert import BERT, MaskedLM
from lmforge.models.build import build_backbone, build_model
from lmforge.models.heads import IGNORE_INDEX

V = 41


def tiny(**kw) -> ModelConfig:
    base = dict(arch="bert", head="masked_lm", vocab_size=V, d_model=32, n_layers=2, n_heads=4,
                max_len=16, norm_eps=1e-12)
    base.update(kw)
    return ModelConfig(**base)


def test_registry_and_contract():
    model = build_model(tiny())
    assert isinstance(model, MaskedLM) and isinstance(model.backbone, BERT)
    bb = model.backbone
    assert bb.causal is False and model.causal is False and bb.out_dim == 32
    assert isinstance(bb.embed, torch.nn.Embedding) and bb.embed.num_embeddings == V
    ids = torch.randint(0, V, (3, 10))
    hidden, state = bb(ids)
    assert hidden.shape == (3, 10, 32) and state is None
    assert bb.pool(hidden).shape == (3, 32)
    logits, loss = model(ids)
    assert logits.shape == (3, 10, V) and loss is None
    assert model.decoder.weight is bb.embed.weight and model.decoder.bias is not None
    assert bb.blocks[0].ln1.eps == 1e-12  # BERT's LayerNorm epsilon reaches every norm


def test_every_position_sees_the_whole_sequence():
    bb = build_backbone(tiny()).eval()
    ids = torch.randint(0, V, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % V
    a, _ = bb(ids)
    b, _ = bb(changed)
    assert not torch.allclose(a[0, 0], b[0, 0])  # the first token sees the last one


def test_padding_mask_leaves_real_positions_unchanged():
    bb = build_backbone(tiny()).eval()
    ids = torch.randint(1, V, (1, 7))
    padded = torch.cat([ids, torch.randint(1, V, (1, 5))], 1)  # junk after the text
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], 1).bool()
    a, _ = bb(ids)
    b, _ = bb(padded, mask=mask)
    torch.testing.assert_close(a, b[:, :7], atol=1e-5, rtol=1e-4)


def test_token_types():
    bb = build_backbone(tiny(extra={"type_vocab_size": 3})).eval()
    ids = torch.randint(0, V, (2, 8))
    zeros = torch.zeros_like(ids)
    torch.testing.assert_close(bb(ids)[0], bb(ids, token_type_ids=zeros)[0])
    segment_b = zeros.clone()
    segment_b[:, 4:] = 2
    assert not torch.allclose(bb(ids)[0], bb(ids, token_type_ids=segment_b)[0])
    with pytest.raises(ValueError, match="token_type_ids has shape"):
        bb(ids, token_type_ids=zeros[:, :3])
    with pytest.raises(ConfigError, match="type_vocab_size must be a positive integer"):
        build_backbone(tiny(extra={"type_vocab_size": 0}))


def test_masked_only_gives_the_same_loss():
    model = build_model(tiny()).eval()
    ids = torch.randint(0, V, (2, 12))
    targets = torch.full_like(ids, IGNORE_INDEX)
    targets[:, [1, 5, 9]] = ids[:, [1, 5, 9]]
    full_logits, full = model(ids, targets)
    some_logits, some = model(ids, targets, masked_only=True)
    assert some_logits.shape == (6, V)
    torch.testing.assert_close(full, some)
    torch.testing.assert_close(some_logits, full_logits[targets != IGNORE_INDEX])


def test_untied_and_biasless_variants_build():
    model = build_model(tiny(tie_embeddings=False, bias=False, positional="rotary"))
    assert model.decoder.weight is not model.backbone.embed.weight
    assert model.backbone.pos is None and model.backbone.blocks[0].attn.qkv.bias is None
    logits, _ = model(torch.randint(0, V, (1, 16)))
    assert logits.shape == (1, 16, V)


def test_overfits_one_masked_batch():
    torch.manual_seed(0)
    model = build_model(tiny(d_model=48))
    ids = torch.randint(7, V, (4, 12))
    targets = torch.full_like(ids, IGNORE_INDEX)
    targets[:, 2::3] = ids[:, 2::3]
    inputs = torch.where(targets != IGNORE_INDEX, torch.full_like(ids, 6), ids)  # 6 = [MASK]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(120):
        _, loss = model(inputs, targets, masked_only=True)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
