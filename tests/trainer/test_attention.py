"""Per-example attention: each example of a packed row attends only within itself."""

import torch
import torch.nn.functional as F

from loraplex.trainer.attention import packed_attention, segment_bounds


class Layer(torch.nn.Module):
    """What the attention function reads from a transformers attention layer."""

    num_key_value_groups = 2
    is_causal = True


def test_examples_start_where_positions_restart():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])
    assert segment_bounds(positions) == [[0, 3, 5, 6, 8], [0, 8]]


def test_each_example_gets_exactly_its_own_causal_attention():
    torch.manual_seed(0)
    heads, kv_heads, dim, lengths = 4, 2, 16, [5, 3, 1, 7]
    total = sum(lengths)
    q = torch.randn(1, heads, total, dim)
    k, v = torch.randn(1, kv_heads, total, dim), torch.randn(1, kv_heads, total, dim)
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)

    out, _ = packed_attention(Layer(), q, k, v, None, scaling=dim**-0.5, position_ids=positions)

    assert out.shape == (1, total, heads, dim)
    start = 0
    for n in lengths:
        part = slice(start, start + n)
        alone = F.scaled_dot_product_attention(
            q[:, :, part],
            k[:, :, part].repeat_interleave(2, dim=1),
            v[:, :, part].repeat_interleave(2, dim=1),
            is_causal=True,
        ).transpose(1, 2)
        torch.testing.assert_close(out[:, part], alone)
        start += n
    whole_row = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), is_causal=True
    ).transpose(1, 2)
    assert not torch.allclose(out[:, 5:], whole_row[:, 5:])  # it would leak across examples


def test_a_padding_mask_goes_to_transformers_sdpa():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 6, 16)
    k, v = torch.randn(2, 2, 6, 16), torch.randn(2, 2, 6, 16)
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    mask[1, :, :, 4:] = False  # row 2 is padded after 4 tokens
    positions = torch.arange(6).expand(2, 6)
    out, _ = packed_attention(Layer(), q, k, v, mask, position_ids=positions)
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), attn_mask=mask
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected)
