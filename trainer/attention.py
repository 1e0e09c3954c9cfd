"""Attention for packed rows: every example attends within itself, computed per example.

transformers can already keep packed examples apart: with position ids that
restart and no 2-D mask, its sdpa path builds a block-diagonal causal mask.
But it still computes every masked-out block, and a mask keeps PyTorch's
kernels off their causal fast path. This attention function (registered with
transformers as `loraplex_packed`) instead runs one causal
`scaled_dot_product_attention` per example on its own slice of the row — no
mask, no work across examples, like flash-attention's variable-length
kernels. A batch with a padding mask (packing off) goes to transformers'
sdpa unchanged, so only packed rows take the new path.

Contract with the model code: the layer passes `position_ids` through to the
attention function (Llama-family models in transformers 5 do); an example
starts wherever a position does not follow the previous one by 1, as in
`transformers.masking_utils.find_packed_sequence_indices`.
"""

import itertools

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "loraplex_packed"


def segment_bounds(position_ids: torch.Tensor) -> list[list[int]]:
    """Per row, the start of every example and the row's end: [0, s1, s2, ..., L]."""
    length = position_ids.shape[-1]
    breaks = (position_ids[:, 1:] - position_ids[:, :-1]) != 1
    rows, cols = breaks.nonzero(as_tuple=True)
    bounds = [[0] for _ in range(position_ids.shape[0])]
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        bounds[row].append(col + 1)
    for row in bounds:
        row.append(length)
    return bounds


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """(batch, heads, seq, dim) in, (batch, seq, heads, dim) out, as transformers' sdpa."""
    if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    positions = position_ids.expand(query.shape[0], -1)
    rows = []
    for b, bounds in enumerate(segment_bounds(positions)):
        parts = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, start:end],
                key[b : b + 1, :, start:end],
                value[b : b + 1, :, start:end],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
            )
            for start, end in itertools.pairwise(bounds)
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def padding_mask_only(*, attention_mask: torch.Tensor | None = None, **kwargs):
    """Build sdpa's mask only for a padding mask; packed rows need none (see above)."""
    if attention_mask is None:
        return None
    return sdpa_mask(attention_mask=attention_mask, **kwargs)


AttentionInterface.register(NAME, packed_attention)
AttentionMaskInterface.register(NAME, padding_mask_only)
