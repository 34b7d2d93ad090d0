"""Causal / same-padded convolution blocks: reference maths, windows, masks."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.nn.conv import (CausalConv1d, ConvBlock, MultiWidthConv, SameConv1d, last_window,
                             receptive_field)


def test_receptive_field_known_answers():
    assert receptive_field(3, [1, 2, 4]) == 15
    assert receptive_field(2, [1, 2, 4, 8]) == 16  # WaveNet: kernel 2, doubling dilations
    assert receptive_field(1, [1, 1]) == 1


def test_causal_conv_equals_left_padded_conv():
    conv = CausalConv1d(4, 6, kernel_size=3, dilation=2)
    x = torch.randn(2, 9, 4)
    y, window = conv(x)
    ref = F.conv1d(F.pad(x.transpose(1, 2), (4, 0)), conv.conv.weight, conv.conv.bias,
                   dilation=2).transpose(1, 2)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(window, x[:, -4:])


def test_causal_conv_in_pieces_equals_one_pass():
    conv = CausalConv1d(4, 4, kernel_size=3, dilation=3)
    x = torch.randn(2, 11, 4)
    full, _ = conv(x)
    window, outs = None, []
    for t in range(11):
        y, window = conv(x[:, t:t + 1], window)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-6, rtol=1e-5)


def test_last_window_ends_at_each_rows_last_real_token():
    padded = torch.arange(2 * 7).view(2, 7, 1).float()  # size 2 + T 5
    out = last_window(padded, 2, torch.tensor([5, 2]))
    assert out[..., 0].tolist() == [[5.0, 6.0], [9.0, 10.0]]
    assert last_window(padded, 2)[..., 0].tolist() == [[5.0, 6.0], [12.0, 13.0]]


def test_same_padded_block_ignores_padding():
    block = ConvBlock(8, kernel_size=3, dilation=2, d_ff=16, causal=False).eval()
    x = torch.randn(2, 7, 8)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).bool()
    noisy = x.clone()
    noisy[~mask] = 50.0
    y, _ = block(noisy, mask=mask)
    alone, _ = block(x[1:, :4])
    torch.testing.assert_close(y[1:, :4], alone, atol=1e-5, rtol=1e-5)


def test_gated_block_and_kim_shapes():
    block = ConvBlock(8, kernel_size=2, dilation=1, d_ff=16, gated=True)
    y, window = block(torch.randn(3, 5, 8))
    assert y.shape == (3, 5, 8) and window.shape == (3, 1, 8)
    kim = MultiWidthConv(8, 6, [3, 4, 5])
    assert kim(torch.randn(3, 5, 8)).shape == (3, 5, 18)


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own, on the reference
def test_same_conv_matches_torch_same_padding():
    for k, d in [(3, 2), (4, 1), (5, 1)]:
        ours = SameConv1d(4, 3, k, dilation=d)
        ref = torch.nn.Conv1d(4, 3, k, dilation=d, padding="same")
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(2, 4, 9)
        torch.testing.assert_close(ours(x), ref(x))
