"""Grouped LoRA ops for the CPU: one matrix multiply per adapter in the batch.

Drop-in replacements for the six ops of `vllm/lora/ops/torch_ops/lora_ops.py`
(same signatures, same results), with two differences:

- a token whose LoRA index is -1 (no adapter) is left alone, as vLLM's GPU
  kernels do; vLLM 0.32's CPU ops index the weight stack with -1 and so give
  such tokens the *last* slot's adapter (vllm-project/vllm#48421);
- instead of gathering a whole weight matrix per token (`weights[indices]`,
  then a batched einsum), tokens are grouped by slot and each group does one
  `x @ W.T`. With one adapter for the whole batch there is no gather at all.

The grouping of a token-index tensor is computed once and reused by every
layer of the same forward pass (vLLM passes the same index buffer to each).
"""

import torch

_last_indices: torch.Tensor | None = None
_last_groups: list[tuple[int, torch.Tensor | None]] = []


def _groups(indices: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """[(slot, rows)] for each slot >= 0 present; rows None means every token.

    Every LoRA layer of one forward pass gets the same indices, so the last
    grouping is reused when the indices are equal (a cheap O(tokens) check).
    """
    global _last_indices, _last_groups
    if (
        _last_indices is not None
        and _last_indices.shape == indices.shape
        and torch.equal(_last_indices, indices)
    ):
        return _last_groups
    slots = torch.unique(indices).tolist()
    if len(slots) == 1:
        groups = [] if slots[0] < 0 else [(int(slots[0]), None)]
    else:
        groups = [(int(s), torch.nonzero(indices == s).squeeze(1)) for s in slots if s >= 0]
    _last_indices, _last_groups = indices.clone(), groups
    return groups


def _stack(weights: torch.Tensor) -> torch.Tensor:
    return weights.squeeze(1) if weights.dim() == 4 else weights


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    weights = _stack(lora_b_weights)
    rank = weights.shape[1]
    dtype = output_tensor.dtype
    for slot, rows in _groups(lora_indices_tensor):
        w = weights[slot].to(dtype)
        if rows is None:
            output_tensor[:, :rank] = scaling * (inputs.to(dtype) @ w.T)
        else:
            output_tensor[rows, :rank] = scaling * (inputs[rows].to(dtype) @ w.T)


def _expand_into(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    columns: slice,
    width: int,
    add_inputs: bool,
) -> None:
    dtype = output_tensor.dtype
    for slot, rows in _groups(lora_indices_tensor):
        w = weights[slot, :width].to(dtype)
        if rows is None:
            result = inputs.to(dtype) @ w.T
            target = output_tensor[:, columns]
            if add_inputs:
                target += result
            else:
                target.copy_(result)
        else:
            result = inputs[rows].to(dtype) @ w.T
            if add_inputs:
                output_tensor[rows, columns] += result
            else:
                output_tensor[rows, columns] = result


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    weights = _stack(lora_b_weights)
    # Adapter and model may pad their widths differently (as in vLLM's op).
    width = min(weights.shape[1], output_tensor.shape[1])
    if inputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        # vLLM's op broadcasts a single input row to every output row.
        expanded = inputs.expand(output_tensor.shape[0], -1)
        indices = lora_indices_tensor[:1].expand(output_tensor.shape[0])
        return _expand_into(
            expanded, weights, output_tensor, indices, slice(0, width), width, add_inputs
        )
    columns = slice(0, width)
    _expand_into(inputs, weights, output_tensor, lora_indices_tensor, columns, width, add_inputs)


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    weights = _stack(lora_b_weights)
    columns = slice(slice_offset, slice_offset + slice_size)
    _expand_into(
        inputs, weights, output_tensor, lora_indices_tensor, columns, slice_size, add_inputs
    )


def _explode(lora_indices_tensor: torch.Tensor, seq_len_tensor: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    indices = _explode(lora_indices_tensor, seq_len_tensor)
    bgmv_shrink(inputs, lora_a_weights, output_tensor, indices, scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    indices = _explode(lora_indices_tensor, seq_len_tensor)
    bgmv_expand(inputs, lora_b_weights, output_tensor, indices, add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    indices = _explode(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(
        inputs,
        lora_b_weights,
        output_tensor,
        indices,
        slice_offset,
        slice_size,
        add_inputs,
    )


OPS = (
    "bgmv_shrink",
    "bgmv_expand",
    "bgmv_expand_slice",
    "sgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
)
