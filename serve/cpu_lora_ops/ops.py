"""Grouped LoRA ops for the CPU: one matrix multiply per group of rows, not per token.

Drop-in replacements for the six ops of `vllm/lora/ops/torch_ops/lora_ops.py`
(same signatures, same results within float tolerance), with two differences:

- a row whose LoRA index is -1 (no adapter) is left alone, as vLLM's GPU
  kernels do; vLLM 0.32's CPU ops index the weight stack with -1 and so give
  such rows the *last* slot's adapter (vllm-project/vllm#48421);
- instead of gathering a whole weight matrix per token (`weights[indices]`,
  then a batched einsum), rows are grouped by slot (see plan.py) and each
  group does one matmul, written straight into the output with `addmm_`
  where the rows are contiguous.

As in vLLM's ops, the arithmetic runs in the output tensor's dtype (the
shrink buffer is float32, the layer output is the model's dtype); weights
are stacks `[slots, out, in]` or `[slots, 1, out, in]`.
"""

import torch

from loraplex.serve.cpu_lora_ops.plan import Plan, plan_for_runs, plan_for_tokens


def slot_stack(weights: torch.Tensor) -> torch.Tensor:
    """vLLM's `[slots, 1, out, in]` weight stacks as `[slots, out, in]` (3-D ones as they are)."""
    return weights.squeeze(1) if weights.dim() == 4 else weights


def _apply(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    target: torch.Tensor,
    plan: Plan,
    *,
    add: bool,
    scale: float = 1.0,
) -> None:
    """target[r] (+)= scale * inputs[r] @ weights[slot(r)].T for every planned row r.

    `target` is a (rows, width) view of the output; `weights` is [slots, >=width, in].
    """
    if inputs.shape[0] != plan.num_rows or target.shape[0] != plan.num_rows:
        if not weights.any():
            # vLLM's logits LoRA under `prompt_logprobs` passes one index per
            # request for one row per prompt token. loraplex never serves LoRA on
            # the output head (adapters/validate.py), so those weights are zero
            # and the exact result is no change: shrink writes zeros, expand adds 0.
            if not add:
                target.zero_()
            return
        # vLLM's ops fail here too; slicing would silently drop rows instead.
        raise ValueError(
            f"LoRA op: {plan.num_rows} row indices for {inputs.shape[0]} input rows "
            f"and {target.shape[0]} output rows"
        )
    width, dtype = target.shape[1], target.dtype
    if plan.kind == "padded":
        _apply_padded(inputs, weights, target, plan, add=add, scale=scale)
    elif plan.kind == "sorted":
        x = inputs.index_select(0, plan.rows).to(dtype)
        y = torch.empty(x.shape[0], width, dtype=dtype)
        for slot, (a, b) in zip(plan.slot_list, plan.bounds, strict=True):
            torch.mm(x[a:b], weights[slot, :width].to(dtype).T, out=y[a:b])
        if scale != 1.0:
            y.mul_(scale)
        scatter(target, plan.rows, y, add=add)
    beta = 1.0 if add else 0.0  # beta 0 ignores what was there, NaN included
    for slot, start, end in plan.runs:
        w = weights[slot, :width].to(dtype)
        x = inputs[start:end].to(dtype)
        target[start:end].addmm_(x, w.T, beta=beta, alpha=scale)


def _apply_padded(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    target: torch.Tensor,
    plan: Plan,
    *,
    add: bool,
    scale: float,
) -> None:
    """All slots in one bmm over a padded [slots, max_rows, in] block of rows."""
    width, dtype = target.shape[1], target.dtype
    n_slots, max_rows = plan.block_slots, plan.max_rows
    block = inputs.index_select(0, plan.pad_sources).to(dtype).view(n_slots, max_rows, -1)
    w = plan.block_weights(weights)[:, :width].to(dtype)
    # One extra zero row: what rows without a slot gather (see below).
    y = torch.empty(n_slots * max_rows + 1, width, dtype=dtype)
    torch.bmm(block, w.transpose(1, 2), out=y[:-1].view(n_slots, max_rows, width))
    if scale != 1.0:
        y.mul_(scale)
    if add and not target.is_contiguous():
        # A column slice: one dense gather and add beats a scatter into it.
        y[-1].zero_()
        target.add_(y.index_select(0, plan.row_sources))
    else:
        scatter(target, plan.rows, y.index_select(0, plan.pad_positions), add=add)


def scatter(
    target: torch.Tensor, rows: torch.Tensor, y: torch.Tensor, *, add: bool, alpha: float = 1.0
) -> None:
    """target[rows] = y, or += alpha * y with `add`, leaving every other row as it was."""
    if target.is_contiguous():
        if add:
            target.index_add_(0, rows, y, alpha=alpha)
        else:
            target.index_copy_(0, rows, y)
    elif add:
        # index_add_ into a column slice is slow; one dense add is not.
        full = torch.zeros(target.shape, dtype=y.dtype)
        full.index_copy_(0, rows, y)
        target.add_(full, alpha=alpha)
    else:
        target[rows] = y


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    weights = slot_stack(lora_b_weights)
    target = output_tensor[:, : weights.shape[1]]
    _apply(inputs, weights, target, plan_for_tokens(lora_indices_tensor), add=False, scale=scaling)


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    weights = slot_stack(lora_b_weights)
    # Adapter and model may pad their widths differently (as in vLLM's op).
    target = output_tensor[:, : min(weights.shape[1], output_tensor.shape[1])]
    rows = output_tensor.shape[0]
    if inputs.shape[0] == 1 and lora_indices_tensor.numel() == 1 and rows != 1:
        # vLLM's op broadcasts a single result row to every output row.
        inputs = inputs.expand(rows, -1)
        lora_indices_tensor = lora_indices_tensor.expand(rows)
    _apply(inputs, weights, target, plan_for_tokens(lora_indices_tensor), add=add_inputs)


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    target = output_tensor[:, slice_offset : slice_offset + slice_size]
    plan = plan_for_tokens(lora_indices_tensor)
    _apply(inputs, slot_stack(lora_b_weights), target, plan, add=add_inputs)


# The sgmv forms get runs of rows sharing a slot (vLLM's `compute_meta`:
# start, length and slot per run); like vLLM's CPU ops, the starts are implied
# by the lengths, and the batch sizes are not needed.


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
    weights = slot_stack(lora_a_weights)
    target = output_tensor[:, : weights.shape[1]]
    plan = plan_for_runs(lora_indices_tensor, seq_len_tensor)
    _apply(inputs, weights, target, plan, add=False, scale=scaling)


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
    weights = slot_stack(lora_b_weights)
    target = output_tensor[:, : min(weights.shape[1], output_tensor.shape[1])]
    plan = plan_for_runs(lora_indices_tensor, seq_len_tensor)
    _apply(inputs, weights, target, plan, add=add_inputs)


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
    target = output_tensor[:, slice_offset : slice_offset + slice_size]
    plan = plan_for_runs(lora_indices_tensor, seq_len_tensor)
    _apply(inputs, slot_stack(lora_b_weights), target, plan, add=add_inputs)


OPS = (
    "bgmv_shrink",
    "bgmv_expand",
    "bgmv_expand_slice",
    "sgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
)
"""The names punica_cpu imports from vllm.lora.ops.torch_ops, all replaced."""
