"""loraplex's CPU LoRA ops against vLLM 0.32's own, on random tensors.

The inputs are shaped as `PunicaWrapperCPU` passes them: weight stacks
`[slots, 1, out, in]` (and 3-D), a float32 shrink buffer, the layer output in
the model's dtype, and for the `sgmv_*` ops the run metadata of vLLM's own
`compute_meta`. Results equal vLLM's within float tolerance on every row with
a LoRA index; rows with index -1 are left exactly as they were (vLLM's CPU
ops give them the last slot's adapter, vllm#48421: asserted too, so we
notice when vLLM fixes it).
"""

import pytest
import torch
from vllm.lora.ops import torch_ops as vllm_ops
from vllm.lora.punica_wrapper.utils import compute_meta

from loraplex.serve.cpu_lora_ops import ops as ours
from loraplex.serve.cpu_lora_ops.plan import LONG_RUN, MAX_RUNS, plan_for_runs, plan_for_tokens

SLOTS, HIDDEN, RANK, OUT = 4, 64, 16, 96
DTYPES = [torch.float32, torch.bfloat16]
# Which rows use which slot; each layout drives one way of running the ops.
LAYOUTS = {
    "one_adapter": "runs",  # every row slot 2: one matmul, no gather
    "runs_with_base": "runs",  # a few contiguous runs, some without LoRA
    "interleaved": "padded",  # decode-like: slots and base rows alternate
    "interleaved_no_base": "padded",
    "uneven": "sorted",  # one slot has most rows: padding would waste
    "prefill_among_decode": "padded",  # the long run is left out of the block
    "prompts_of_many_adapters": "runs",  # more prompts than MAX_RUNS: each on its rows
    "prompts_among_decode": "padded",  # every prompt left out of the block
    "prompts_among_uneven_rows": "sorted",  # the prompt left out, the rest one per slot
    "all_base": "none",
}
PROMPT = LONG_RUN  # rows: a run this long always runs apart


def token_slots(layout: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(len(layout))
    if layout == "one_adapter":
        return torch.full((23,), 2)
    if layout == "runs_with_base":
        return torch.tensor([1] * 5 + [-1] * 7 + [3] * 11)
    if layout == "interleaved":
        return torch.randint(-1, SLOTS, (23,), generator=gen)
    if layout == "interleaved_no_base":
        return torch.randint(0, SLOTS, (23,), generator=gen)
    if layout == "prefill_among_decode":
        return torch.tensor([0, 1, 2, 3, -1, 1, 2, 0] + [2] * 40 + [3, 1])
    if layout in ("uneven", "prompts_among_uneven_rows"):
        slots = torch.tensor([0, -1] * 60)
        slots[[5, 21, 47]] = torch.tensor([1, 2, 3])
        return slots if layout == "uneven" else torch.cat([slots, torch.full((PROMPT,), 1)])
    if layout == "prompts_of_many_adapters":
        prompts = [0] * PROMPT + [1] * (PROMPT + 6) + [2] * PROMPT + [3] * PROMPT + [0] * PROMPT
        return torch.tensor([*prompts, -1, 1])
    if layout == "prompts_among_decode":
        prompts = [2] * PROMPT + [3] * (PROMPT + 1) + [1] * PROMPT + [0] * PROMPT + [2] * PROMPT
        return torch.tensor([0, 1, 2, 3, -1, 1, 2, 0, *prompts, 3, 1])
    return torch.full((23,), -1)


def weights(shape: tuple[int, int], four_d: bool, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = (0.5 * torch.randn(SLOTS, *shape, generator=gen)).to(dtype)
    return w.unsqueeze(1) if four_d else w


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def assert_matches_vllm(got, want, start, slots: torch.Tensor) -> None:
    """Rows with a slot equal vLLM's; rows without stay exactly as they started."""
    tol = {"atol": 5e-2, "rtol": 1.6e-2} if got.dtype == torch.bfloat16 else {}
    torch.testing.assert_close(got[slots >= 0], want[slots >= 0], **tol)
    assert torch.equal(got[slots < 0], start[slots < 0])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_takes_its_path(layout):
    slots = token_slots(layout)
    assert plan_for_tokens(slots).kind == LAYOUTS[layout]
    runs, lengths = torch.unique_consecutive(slots, return_counts=True)
    assert plan_for_runs(runs, lengths).kind == LAYOUTS[layout]


def test_a_prefill_among_decode_rows_runs_apart_from_the_padded_block():
    """Padding each slot to the prefill's 40 rows would be 4 x 40 rows for 50."""
    plan = plan_for_tokens(token_slots("prefill_among_decode"))
    assert plan.runs == ((2, 8, 48),)
    assert plan.max_rows == 3  # slot 1: rows 1, 5 and 49
    assert sorted(plan.rows.tolist()) == [0, 1, 2, 3, 5, 6, 7, 48, 49]


def test_prefills_of_equal_length_all_run_apart():
    """Leaving out the first prefill leaves the second as tall as it: both go."""
    decode = [*range(8), -1, *range(8)]  # 17 rows: eight slots, two rows each
    plan = plan_for_tokens(torch.tensor(decode + [3] * 40 + [5] * 40))
    assert plan.kind == "padded"
    assert plan.runs == ((3, 17, 57), (5, 57, 97))
    assert plan.max_rows == 2


@pytest.mark.parametrize(
    ("slots", "pad_free"),
    [
        ([5, 2, 7, 3, 4, 6], True),  # one decode row per adapter: the block is the rows
        ([5, 2, 4, 3, 5, 2, 4, 3], True),  # two each of slots 2-5, interleaved
        ([5, 2, 7, 3, 5], False),  # slot 5 has two rows, the others pad to two
        ([2, 3, 4, 6, 2, 3, 4, 6], False),  # compact range 2-6: slot 5's group pads
    ],
)
def test_a_block_without_padding_holds_its_rows_in_order(slots, pad_free):
    """fused._add_block_rows adds a pad-free block as it is, row i to rows[i]."""
    plan = plan_for_tokens(torch.tensor(slots))
    assert plan.kind == "padded" and plan.pad_free == pad_free
    if pad_free:
        assert torch.equal(plan.pad_positions, torch.arange(len(slots)))


def test_every_prompt_runs_on_its_own_rows_however_many():
    """A wave of prompts of many adapters: one product per prompt, no block."""
    plan = plan_for_tokens(token_slots("prompts_of_many_adapters"))
    assert len(plan.runs) == 6 > MAX_RUNS
    assert [run[0] for run in plan.runs] == [0, 1, 2, 3, 0, 1]


def test_prompts_among_decode_rows_all_run_apart_from_the_padded_block():
    plan = plan_for_tokens(token_slots("prompts_among_decode"))
    assert [(slot, end - start) for slot, start, end in plan.runs] == [
        (2, PROMPT), (3, PROMPT + 1), (1, PROMPT), (0, PROMPT), (2, PROMPT),
    ]  # fmt: skip
    assert plan.max_rows == 3  # slot 1: three decode rows; no prompt pads the block


def test_a_prompt_among_uneven_rows_runs_apart_from_the_sorted_rows():
    plan = plan_for_tokens(token_slots("prompts_among_uneven_rows"))
    assert plan.runs == ((1, 120, 120 + PROMPT),)
    assert plan.rows.max() < 120


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("four_d", [True, False])
def test_bgmv_shrink_matches_vllm(dtype, layout, four_d):
    slots = token_slots(layout)
    x = randn(len(slots), HIDDEN, dtype=dtype, seed=1)
    w = weights((RANK, HIDDEN), four_d, dtype, seed=2)
    start = randn(len(slots), RANK, seed=3)  # the float32 buffer, not zeros: rows must stay
    want, got = start.clone(), start.clone()
    vllm_ops.bgmv_shrink(x, w, want, slots, 0.5)
    ours.bgmv_shrink(x, w, got, slots, 0.5)
    assert_matches_vllm(got, want, start, slots)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("four_d", [True, False])
@pytest.mark.parametrize("add_inputs", [True, False])
def test_bgmv_expand_matches_vllm(dtype, layout, four_d, add_inputs):
    slots = token_slots(layout)
    h = randn(len(slots), RANK, seed=4)  # the float32 shrink buffer
    w = weights((OUT, RANK), four_d, dtype, seed=5)
    start = randn(len(slots), OUT, dtype=dtype, seed=6)
    want, got = start.clone(), start.clone()
    vllm_ops.bgmv_expand(h, w, want, slots, add_inputs)
    ours.bgmv_expand(h, w, got, slots, add_inputs)
    assert_matches_vllm(got, want, start, slots)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("add_inputs", [True, False])
def test_bgmv_expand_slice_matches_vllm_and_keeps_other_columns(dtype, layout, add_inputs):
    slots = token_slots(layout)
    offset, size = 32, 48
    h = randn(len(slots), RANK, seed=7)
    w = weights((size, RANK), True, dtype, seed=8)
    start = randn(len(slots), OUT + 32, dtype=dtype, seed=9)
    want, got = start.clone(), start.clone()
    vllm_ops.bgmv_expand_slice(h, w, want, slots, offset, size, add_inputs)
    ours.bgmv_expand_slice(h, w, got, slots, offset, size, add_inputs)
    assert_matches_vllm(got, want, start, slots)
    assert torch.equal(got[:, :offset], start[:, :offset])
    assert torch.equal(got[:, offset + size :], start[:, offset + size :])


def test_bgmv_expand_uses_the_common_width_when_adapter_and_model_pad_differently():
    slots = token_slots("interleaved_no_base")
    h = randn(len(slots), RANK, seed=10)
    w = weights((OUT + 8, RANK), True, torch.float32, seed=11)  # wider than the output
    start = randn(len(slots), OUT, seed=12)
    want, got = start.clone(), start.clone()
    vllm_ops.bgmv_expand(h, w, want, slots, True)
    ours.bgmv_expand(h, w, got, slots, True)
    torch.testing.assert_close(got, want)


def test_bgmv_expand_broadcasts_a_single_row_like_vllm():
    h = randn(1, RANK, seed=13)
    w = weights((OUT, RANK), True, torch.float32, seed=14)
    start = randn(5, OUT, seed=15)
    want, got = start.clone(), start.clone()
    vllm_ops.bgmv_expand(h, w, want, torch.tensor([1]), True)
    ours.bgmv_expand(h, w, got, torch.tensor([1]), True)
    torch.testing.assert_close(got, want)


def sgmv_metadata(slots: torch.Tensor) -> tuple:
    """What PunicaWrapperCPU passes as `*self.prefill_metadata` (vLLM's compute_meta)."""
    starts, lengths, run_slots, batches, max_len, tokens, _ = compute_meta(slots)
    return starts, lengths, run_slots, batches, max_len, tokens


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("four_d", [True, False])
def test_sgmv_shrink_matches_vllm(dtype, layout, four_d):
    slots = token_slots(layout)
    meta = sgmv_metadata(slots)
    x = randn(len(slots), HIDDEN, dtype=dtype, seed=16)
    w = weights((RANK, HIDDEN), four_d, dtype, seed=17)
    start = randn(len(slots), RANK, seed=18)
    want, got = start.clone(), start.clone()
    vllm_ops.sgmv_shrink(x, w, want, *meta, 2.0)
    ours.sgmv_shrink(x, w, got, *meta, 2.0)
    assert_matches_vllm(got, want, start, slots)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("four_d", [True, False])
@pytest.mark.parametrize("add_inputs", [True, False])
def test_sgmv_expand_matches_vllm(dtype, layout, four_d, add_inputs):
    slots = token_slots(layout)
    meta = sgmv_metadata(slots)
    h = randn(len(slots), RANK, seed=19)
    w = weights((OUT, RANK), four_d, dtype, seed=20)
    start = randn(len(slots), OUT, dtype=dtype, seed=21)
    want, got = start.clone(), start.clone()
    vllm_ops.sgmv_expand(h, w, want, *meta, add_inputs)
    ours.sgmv_expand(h, w, got, *meta, add_inputs)
    assert_matches_vllm(got, want, start, slots)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("add_inputs", [True, False])
def test_sgmv_expand_slice_matches_vllm_for_each_slice(dtype, layout, add_inputs):
    """A merged q/k/v output: three slices at their offsets, as add_expand walks them."""
    slots = token_slots(layout)
    meta = sgmv_metadata(slots)
    sizes = (64, 16, 16)
    start = randn(len(slots), sum(sizes), dtype=dtype, seed=22)
    want, got = start.clone(), start.clone()
    offset = 0
    for i, size in enumerate(sizes):
        h = randn(len(slots), RANK, seed=23 + i)
        w = weights((size, RANK), True, dtype, seed=26 + i)
        vllm_ops.sgmv_expand_slice(h, w, want, *meta, offset, size, add_inputs)
        ours.sgmv_expand_slice(h, w, got, *meta, offset, size, add_inputs)
        offset += size
    assert_matches_vllm(got, want, start, slots)


def test_a_refilled_index_buffer_is_not_served_a_stale_grouping():
    """vLLM refills one index buffer in place each step; the plan cache must notice."""
    buffer = torch.empty(23, dtype=torch.long)
    x = randn(23, HIDDEN, seed=29)
    w = weights((RANK, HIDDEN), True, torch.float32, seed=30)
    for layout in ("interleaved", "one_adapter", "interleaved_no_base", "interleaved"):
        buffer.copy_(token_slots(layout))
        want, got = torch.zeros(23, RANK), torch.zeros(23, RANK)
        vllm_ops.bgmv_shrink(x, w, want, buffer, 1.0)
        ours.bgmv_shrink(x, w, got, buffer, 1.0)
        assert_matches_vllm(got, want, torch.zeros(23, RANK), buffer)


def test_vllm_cpu_ops_still_leak_the_last_adapter_into_base_rows():
    """Documents vllm#48421: if this starts failing, vLLM fixed its CPU ops."""
    x = randn(3, HIDDEN, seed=31)
    w = weights((RANK, HIDDEN), False, torch.float32, seed=32)
    out = torch.zeros(3, RANK)
    vllm_ops.bgmv_shrink(x, w, out, torch.tensor([0, -1, -1]), 1.0)
    torch.testing.assert_close(out[1], x[1] @ w[SLOTS - 1].T)


def test_per_row_slots_equal_to_per_run_slots_get_their_own_grouping():
    """A decode step's sampled rows ([-1, 0, -1, 1]) vs. the runs of its prefill."""
    run_slots = torch.tensor([-1, 0, -1, 1, 2, 3])
    slots = torch.repeat_interleave(run_slots, torch.full((6,), 4))
    x = randn(len(slots), HIDDEN, seed=33)
    w = weights((RANK, HIDDEN), True, torch.float32, seed=34)
    got = torch.zeros(len(slots), RANK)
    ours.sgmv_shrink(x, w, got, *sgmv_metadata(slots), 1.0)
    x_sampled = x[3::4]  # one sampled row per sequence
    want, got = torch.zeros(6, RANK), torch.zeros(6, RANK)
    vllm_ops.bgmv_shrink(x_sampled, w, want, run_slots, 1.0)
    ours.bgmv_shrink(x_sampled, w, got, run_slots, 1.0)
    assert_matches_vllm(got, want, torch.zeros(6, RANK), run_slots)


def test_prompt_logprobs_logits_rows_with_per_request_indices():
    """vLLM's logits LoRA under `prompt_logprobs` passes one index per request for one
    row per prompt token. With the head's LoRA weights zero (loraplex never serves LoRA
    on the head) the result is exactly no change; with real weights it is refused."""
    x = torch.randn(56, HIDDEN)
    indices = torch.tensor([0, 1])
    buffer = torch.full((56, RANK), 7.0)
    ours.bgmv_shrink(x, torch.zeros(SLOTS, 1, RANK, HIDDEN), buffer, indices, 1.0)
    assert torch.equal(buffer, torch.zeros(56, RANK))
    y = torch.randn(56, OUT)
    before = y.clone()
    ours.bgmv_expand(buffer, torch.zeros(SLOTS, 1, OUT, RANK), y, indices, add_inputs=True)
    assert torch.equal(y, before)
    with pytest.raises(ValueError, match="2 row indices for 56 input rows"):
        ours.bgmv_shrink(x, torch.randn(SLOTS, 1, RANK, HIDDEN), buffer, indices, 1.0)
