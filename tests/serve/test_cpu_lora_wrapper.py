"""loraplex's CPU platform and punica wrapper: found by vLLM, fused, in step with the slots.

The wrapper gets what vLLM's LoRA layers pass: a merged module's slot stacks
(`[slots, 1, rank, in]` and `[slots, 1, out, rank]` per slice), its output
widths, and the batch's mapping through vLLM's own `update_metadata`. The
reference is the arithmetic itself in float32: every row with an adapter
gets `x @ A.T @ B.T * scale` per slice, and a row without one is unchanged.
"""

import pytest
import torch
from vllm.lora.layers.utils import LoRAMapping
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
from vllm.lora.punica_wrapper.punica_selector import get_punica_wrapper
from vllm.platforms import current_platform
from vllm.plugins import load_plugins_by_group

from loraplex.serve import slots as slots_module
from loraplex.serve.cpu_lora_ops import fused as fused_module
from loraplex.serve.cpu_lora_ops import packed, plugin
from loraplex.serve.cpu_lora_ops.fused import FusedWeights, apply_fused
from loraplex.serve.cpu_lora_ops.plan import plan_for_tokens
from loraplex.serve.cpu_lora_ops.platform import LoraplexCpuPlatform
from loraplex.serve.cpu_lora_ops.platform_plugin import detect
from loraplex.serve.cpu_lora_ops.positions import Layout, Positions
from loraplex.serve.cpu_lora_ops.wrapper import LoraplexPunicaWrapperCPU
from loraplex.serve.cpu_lora_ops.zero_slots import NonzeroSlots

SLOTS, HIDDEN, RANK = 4, 64, 8
WIDTHS = (64, 32, 32)  # a QKV-like module: three slices of unequal widths
UNEVEN = [4 if i == 47 else 3 if i == 21 else 2 if i == 5 else 1 - i % 2 for i in range(120)]
# Adapter ids per token (0: no adapter); slot s holds adapter id s + 1.
MAPPINGS = {
    "runs": [2] * 9 + [0] * 5 + [4] * 9,
    # A prefill of 256 rows (over ADDMM_ROWS): its expands accumulate with addmm_ (AMX, bf16).
    "runs_of_a_prefill": [2] * 256 + [0] * 5 + [4] * 9,
    "padded": [1, 0, 3, 2, 4, 0, 1, 3, 2, 0, 4, 1, 2, 3, 0, 4] * 2,
    "sorted": UNEVEN,
    # Uneven decode rows one product per adapter, and a prompt apart from them.
    "sorted_and_a_prompt": UNEVEN + [2] * 64,
    # A prefill of adapter 3 among decode rows: padded, the prefill run apart.
    "padded_and_a_run": [1, 0, 3, 2, 4, 0, 1, 3] + [3] * 40 + [2, 4],
    # Prompts of four adapters, more than MAX_RUNS: each runs on its rows, the
    # 128-row ones adding their expands in place, the 64-row ones on the kernel.
    "runs_of_prompts": [1] * 128 + [2] * 130 + [3] * 64 + [4] * 128 + [1] * 70 + [2, 3],
    # Prompts among decode rows: the decode rows padded, every prompt apart.
    "padded_and_prompts": [1, 0, 3, 2, 4, 0, 1, 3]
    + [3] * 128
    + [2] * 64
    + [4] * 130
    + [1] * 64
    + [2] * 70
    + [2, 4],
}


@pytest.fixture(autouse=True)
def restore_default(monkeypatch):
    yield
    monkeypatch.delenv(plugin.ENV, raising=False)
    plugin.register()


def stacks(seed: int, slots: int = SLOTS, rank: int = RANK) -> tuple[tuple, tuple]:
    gen = torch.Generator().manual_seed(seed)
    a = tuple(0.3 * torch.randn(slots, 1, rank, HIDDEN, generator=gen) for _ in WIDTHS)
    b = tuple(0.3 * torch.randn(slots, 1, w, rank, generator=gen) for w in WIDTHS)
    return a, b


def in_order(slots: int = SLOTS) -> Layout:
    """Every slot at its own position in the fused copies (vLLM's order)."""
    return Positions().arrange(list(range(slots)))


def wrapper(cls, ids: list[int], slot_ids: list[int | None]):
    w = cls(4096, 256, "cpu")
    mapping = LoRAMapping(tuple(ids), tuple(ids), is_prefill=False)
    w.update_metadata(mapping, slot_ids, SLOTS + 1, 32000)
    return w


def expected(y, x, a, b, slots: torch.Tensor, scale: float) -> torch.Tensor:
    out, offset = y.float().clone(), 0
    for a_i, b_i, width in zip(a, b, WIDTHS, strict=True):
        for row, slot in enumerate(slots.tolist()):
            if slot >= 0:
                delta = x[row].float() @ a_i[slot, 0].float().T @ b_i[slot, 0].float().T
                out[row, offset : offset + width] += scale * delta
        offset += width
    return out


def test_vllm_finds_the_platform_and_builds_the_wrapper():
    assert load_plugins_by_group("vllm.platform_plugins")["loraplex_cpu"] is detect
    assert isinstance(current_platform, LoraplexCpuPlatform)
    assert isinstance(get_punica_wrapper(64, 4, "cpu"), LoraplexPunicaWrapperCPU)
    assert plugin.active_cpu_lora_ops() == "loraplex"


@pytest.mark.parametrize("choice", ["loraplex", "grouped"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", MAPPINGS)
def test_a_merged_module_gets_each_slices_lora_and_base_rows_stay(
    layout, dtype, choice, monkeypatch
):
    """Fused (`loraplex`) and slice by slice (`grouped`): the same arithmetic."""
    monkeypatch.setenv(plugin.ENV, choice)
    plugin.register()
    ids = MAPPINGS[layout]
    a, b = (tuple(t.to(dtype) for t in s) for s in stacks(seed=1))
    w = wrapper(LoraplexPunicaWrapperCPU, ids, [1, 2, 3, 4])
    slots = w.token_lora_indices.clone()
    assert plan_for_tokens(slots).kind == layout.split("_")[0]
    x = torch.randn(len(ids), HIDDEN).to(dtype)
    y = torch.randn(len(ids), sum(WIDTHS)).to(dtype)
    start = y.clone()
    w.add_lora_linear(y, x, a, b, 0.5, WIDTHS)
    want = expected(start, x, a, b, slots, 0.5)
    tol = {"atol": 0.15, "rtol": 0.02} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(y.float(), want, **tol)
    assert torch.equal(y[slots < 0], start[slots < 0])
    assert not torch.equal(y[slots >= 0], start[slots >= 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_adapter_written_into_a_slot_is_used_from_the_next_batch(dtype):
    """vLLM writes a slot in place and then maps the new id to it: the fused copy follows
    (float32: torch's products; bfloat16: the AMX kernel's packed copy, where usable)."""
    ids = MAPPINGS["padded"]
    a, b = (tuple(t.to(dtype) for t in s) for s in stacks(seed=2))
    x = torch.randn(len(ids), HIDDEN).to(dtype)
    y0 = torch.randn(len(ids), sum(WIDTHS)).to(dtype)
    w = wrapper(LoraplexPunicaWrapperCPU, ids, [1, 2, 3, 4])
    w.add_lora_linear(y0.clone(), x, a, b, 1.0, WIDTHS)  # builds the fused copy

    new_a, new_b = (tuple(t.to(dtype) for t in s) for s in stacks(seed=3))
    for stacked, new in zip((*a, *b), (*new_a, *new_b), strict=True):
        stacked[2].copy_(new[2])  # as vLLM's set_lora does, slot 2 only
    later = [5 if i == 3 else i for i in ids]  # adapter 5 now sits in slot 2
    w.update_metadata(LoRAMapping(tuple(later), tuple(later)), [1, 2, 5, 4], SLOTS + 1, 32000)
    y = y0.clone()
    w.add_lora_linear(y, x, a, b, 1.0, WIDTHS)
    want = expected(y0, x, a, b, w.token_lora_indices, 1.0)
    tol = {"atol": 0.15, "rtol": 0.02} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(y.float(), want, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_new_fused_copy_copies_only_the_slots_that_hold_an_adapter(dtype, monkeypatch):
    """A new copy copies the slots vLLM names an adapter for, not the others (no
    row reads them); once vLLM puts an adapter there, its rows get that adapter's
    LoRA, and a slot's earlier contents leave no trace."""
    filled = []
    fill = fused_module._fill
    monkeypatch.setattr(
        fused_module, "_fill", lambda c, slot, *s: (filled.append(slot), fill(c, slot, *s))
    )
    ids = [1, 0, 3, 0, 1, 3]  # slot 0 holds adapter 1, slot 2 adapter 3
    a, b = (tuple(t.to(dtype) for t in s) for s in stacks(seed=14))
    weights = FusedWeights()
    copy = weights.get(a, b, WIDTHS, [1, None, 3], in_order(), dtype)  # slot 3: past vLLM's list
    assert filled == [0, 2]
    for stack in (copy.a, *copy.b):
        stack[1].fill_(float("nan"))  # what an untouched slot may hold

    for stacked in (*a, *b):
        stacked[1].mul_(1)  # as vLLM's set_lora does: slot 1 written in place
    later = [2 if i == 0 else i for i in ids]  # adapter 2 now sits in slot 1
    w = wrapper(LoraplexPunicaWrapperCPU, later, [1, 2, 3])
    w._fused = weights
    x = torch.randn(len(ids), HIDDEN).to(dtype)
    y0 = torch.randn(len(ids), sum(WIDTHS)).to(dtype)
    y = y0.clone()
    w.add_lora_linear(y, x, a, b, 1.0, WIDTHS)
    assert filled == [0, 2, 1]
    want = expected(y0, x, a, b, w.token_lora_indices, 1.0)
    tol = {"atol": 0.15, "rtol": 0.02} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(y.float(), want, **tol)


def test_the_vllm_choice_runs_vllms_own_wrapper_arithmetic(monkeypatch):
    ids = [1, 2, 3, 4] * 4  # every row has an adapter: vLLM's ops are right there
    a, b = stacks(seed=5)
    x, y0 = torch.randn(len(ids), HIDDEN), torch.randn(len(ids), sum(WIDTHS))
    monkeypatch.setenv(plugin.ENV, "vllm")
    plugin.register()
    assert plugin.active_cpu_lora_ops() == "vllm"
    ours, theirs = y0.clone(), y0.clone()
    wrapper(LoraplexPunicaWrapperCPU, ids, [1, 2, 3, 4]).add_lora_linear(ours, x, a, b, 1.0, WIDTHS)
    wrapper(PunicaWrapperCPU, ids, [1, 2, 3, 4]).add_lora_linear(theirs, x, a, b, 1.0, WIDTHS)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slots_used", [(0, 1, 2, 5), (3, 90)], ids=["range", "spread"])
def test_interleaved_rows_on_a_range_of_slots_or_spread_ones(slots_used, dtype):
    """The padded block takes a compact range of the stack as it is (a view) and
    gathers spread slots; both give every row its own slot's LoRA."""
    slots = 96
    a, b = (tuple(t.to(dtype) for t in s) for s in stacks(seed=7, slots=slots))
    token_slots = torch.tensor([slots_used[i % len(slots_used)] for i in range(24)])
    token_slots[[4, 9]] = -1
    plan = plan_for_tokens(token_slots)
    assert plan.kind == "padded"
    copy = FusedWeights().get(a, b, WIDTHS, list(range(1, slots + 1)), in_order(slots), dtype)
    weights = plan.block_weights(copy.a)
    shares = weights.untyped_storage().data_ptr() == copy.a.untyped_storage().data_ptr()
    assert shares == (slots_used == (0, 1, 2, 5))
    x = torch.randn(24, HIDDEN).to(dtype)
    y = torch.randn(24, sum(WIDTHS)).to(dtype)
    start = y.clone()
    apply_fused(x, copy, y, plan, 0.5)
    want = expected(start, x, a, b, token_slots, 0.5)
    tol = {"atol": 0.15, "rtol": 0.02} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(y.float(), want, **tol)
    assert torch.equal(y[[4, 9]], start[[4, 9]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fused_copy_is_packed_for_the_amx_kernel_where_it_runs(dtype):
    """bfloat16 on an AMX CPU: the copy is in the kernel's layout, with one unpadded B
    per slice; float32: plain, B block-diagonal. serve/slots.py counts the plain
    layout's memory (A and B both inner wide, padded to 32): the packed one takes less."""
    a, b = (tuple(t.to(dtype) for t in s) for s in stacks(seed=8))
    copy = FusedWeights().get(a, b, WIDTHS, [1, 2, 3, 4], in_order(), dtype)
    assert copy.packed == (dtype == torch.bfloat16 and torch.cpu._is_amx_tile_supported())
    inner = -(-len(WIDTHS) * RANK // slots_module.FUSED_INNER_ALIGN) * 32
    assert packed.N_ALIGN == slots_module.FUSED_INNER_ALIGN == 32
    counted = SLOTS * inner * (HIDDEN + sum(WIDTHS))
    held = copy.a.numel() + sum(stack.numel() for stack in copy.b)
    if copy.packed:
        assert [tuple(stack.shape) for stack in copy.b] == [(SLOTS, w, RANK) for w in WIDTHS]
        assert held == SLOTS * (inner * HIDDEN + RANK * sum(WIDTHS)) < counted
    else:
        assert held == counted


@pytest.mark.skipif(not torch.cpu._is_amx_tile_supported(), reason="needs an AMX CPU")
def test_the_packed_layout_is_vllms_and_the_kernel_takes_any_even_k():
    """pack() lays weights out as vLLM's convert_weight_packed does where that packer
    accepts them (k a multiple of 32), and the kernel multiplies with k = 16 or 2."""
    gen = torch.Generator().manual_seed(11)
    w = torch.randn(3, 64, 96, generator=gen).to(torch.bfloat16)
    assert torch.equal(packed.pack(w), torch.ops._C.convert_weight_packed(w))
    for k, rows in [(16, 3), (16, 20), (2, 1), (2, 9)]:
        w = torch.randn(2, 64, k, generator=gen).to(torch.bfloat16)
        x = torch.randn(2, rows, 2 * k, generator=gen).to(torch.bfloat16)[..., k:]
        out = torch.zeros(2, rows, 96, dtype=torch.bfloat16)
        packed.bmm(out[..., 16:80], x, packed.pack(w))  # strided input and output
        want = x.float() @ w.float().transpose(1, 2)
        torch.testing.assert_close(out[..., 16:80].float(), want, atol=0.05, rtol=0.02)
        assert not out[..., :16].any() and not out[..., 80:].any()


@pytest.mark.parametrize(("first", "count"), [(0, 96), (8, 8), (24, 40), (32, 45), (90, 6)])
def test_rows_written_into_a_packed_weight_are_what_packing_the_new_matrix_gives(first, count):
    """write_rows is pack() of the matrix with those rows replaced, and nothing else
    changes: rows inside one block of 32, across blocks, whole blocks and a tail."""
    gen = torch.Generator().manual_seed(13)
    matrix = torch.randn(96, 20, generator=gen).to(torch.bfloat16)
    rows = torch.randn(count, 20, generator=gen).to(torch.bfloat16)
    target = packed.pack(matrix)
    packed.write_rows(target, first, rows)
    matrix[first : first + count] = rows
    assert torch.equal(target, packed.pack(matrix))


@pytest.mark.parametrize("rank", [1, 16])
@pytest.mark.parametrize("layout", MAPPINGS)
def test_odd_and_wide_ranks_get_the_same_arithmetic(layout, rank):
    """vLLM allows rank 1: each slice's k is rounded up to 2 for the kernel's pairs."""
    ids = MAPPINGS[layout]
    a, b = (tuple(t.to(torch.bfloat16) for t in s) for s in stacks(seed=12, rank=rank))
    w = wrapper(LoraplexPunicaWrapperCPU, ids, [1, 2, 3, 4])
    slots = w.token_lora_indices.clone()
    x = torch.randn(len(ids), HIDDEN).to(torch.bfloat16)
    y = torch.randn(len(ids), sum(WIDTHS)).to(torch.bfloat16)
    start = y.clone()
    w.add_lora_linear(y, x, a, b, 0.5, WIDTHS)
    tol = {"atol": 0.15 * max(1, rank // 8), "rtol": 0.02}
    torch.testing.assert_close(y.float(), expected(start, x, a, b, slots, 0.5), **tol)
    assert torch.equal(y[slots < 0], start[slots < 0])


def test_the_logits_lora_follows_the_slots_that_hold_one():
    """loraplex serves no output-head LoRA, so vLLM's logits stacks stay zero and the
    op is skipped; once vLLM writes one into a slot, that slot's rows get it."""
    vocab, ids = 96, [1, 3, 0, 2, 4, 3, 1, 0]
    gen = torch.Generator().manual_seed(9)
    a = torch.randn(SLOTS, 1, RANK, HIDDEN, generator=gen)
    b = torch.zeros(SLOTS, 1, vocab, RANK)
    w = wrapper(LoraplexPunicaWrapperCPU, ids, [1, 2, 3, 4])
    x, logits = torch.randn(len(ids), HIDDEN), torch.randn(len(ids), vocab)
    nonzero = NonzeroSlots()
    assert nonzero.of(b, [1, 2, 3, 4]) == frozenset()
    y = logits.clone()
    w.add_lora_logits(y, x, a, b, 1.0)
    assert torch.equal(y, logits)

    b[2].copy_(torch.randn(1, vocab, RANK, generator=gen))  # as vLLM's set_lora does
    later = [5 if i == 3 else i for i in ids]  # adapter 5 now sits in slot 2
    w.update_metadata(LoRAMapping(tuple(later), tuple(later)), [1, 2, 5, 4], SLOTS + 1, 32000)
    assert nonzero.of(b, [1, 2, 5, 4]) == frozenset({2})
    y = logits.clone()
    w.add_lora_logits(y, x, a, b, 1.0)
    rows = [i for i, id_ in enumerate(later) if id_ == 5]
    want = logits.clone()
    want[rows] += x[rows] @ a[2, 0].T @ b[2, 0].T
    torch.testing.assert_close(y, want)

    b[2].zero_()  # vLLM resets a slot it frees
    assert nonzero.of(b, [1, 2, None, 4]) == frozenset()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_slice_whose_b_is_cut_or_padded_to_the_modules_width(dtype):
    """The adapter and the model may pad a slice's width differently (as in vLLM's
    ops): the fused copy uses the rows both have, and the rest of the slice is unchanged."""
    rows_of_b = (70, 32, 24)  # wider than its slice, equal, narrower
    gen = torch.Generator().manual_seed(11)
    a = tuple((0.3 * torch.randn(SLOTS, 1, RANK, HIDDEN, generator=gen)).to(dtype) for _ in WIDTHS)
    b = tuple((0.3 * torch.randn(SLOTS, 1, r, RANK, generator=gen)).to(dtype) for r in rows_of_b)
    token_slots = torch.tensor([i - 1 for i in MAPPINGS["padded"]])
    copy = FusedWeights().get(a, b, WIDTHS, [1, 2, 3, 4], in_order(), dtype)
    x = torch.randn(len(token_slots), HIDDEN).to(dtype)
    y = torch.randn(len(token_slots), sum(WIDTHS)).to(dtype)
    start = y.clone()
    apply_fused(x, copy, y, plan_for_tokens(token_slots), 0.5)
    want, offset = start.float().clone(), 0
    for a_i, b_i, width in zip(a, b, WIDTHS, strict=True):
        used = min(width, b_i.shape[2])
        for row, slot in enumerate(token_slots.tolist()):
            if slot >= 0:
                delta = x[row].float() @ a_i[slot, 0].float().T @ b_i[slot, 0, :used].float().T
                want[row, offset : offset + used] += 0.5 * delta
        offset += width
    tol = {"atol": 0.15, "rtol": 0.02} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(y.float(), want, **tol)
    narrow = slice(sum(WIDTHS) - 8, sum(WIDTHS))  # the last slice's rows its B lacks
    assert torch.equal(y[:, narrow], start[:, narrow])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_batchs_spread_slots_sit_first_in_the_fused_copy(dtype, monkeypatch):
    """vLLM's slots 3, 40 and 90 of 96: the wrapper copies them to the fused copy's
    first positions, so the padded block takes the copy's own matrices (no gathered
    weights). A later batch copies in only its new slot; a slot vLLM rewrites is
    copied again; a prompt of a moved slot adds its expands from vLLM's B of that slot."""
    slots = 96
    a, b = (tuple(t.to(dtype) for t in s) for s in stacks(seed=15, slots=slots))
    filled, fill = [], fused_module._fill

    def counted_fill(copy, position, slot, *stacks):
        filled.append((position, slot))
        fill(copy, position, slot, *stacks)

    monkeypatch.setattr(fused_module, "_fill", counted_fill)
    slot_ids = list(range(1, slots + 1))  # slot s holds adapter s + 1 until rewritten
    w = LoraplexPunicaWrapperCPU(4096, 256, "cpu")
    tol = {"atol": 0.15, "rtol": 0.02} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}

    def run(token_slots: list[int]):
        ids = tuple(slot_ids[s] if s >= 0 else 0 for s in token_slots)
        w.update_metadata(LoRAMapping(ids, ids, is_prefill=False), slot_ids, slots, 32000)
        plan, layout = w._linear_plan()
        x = torch.randn(len(ids), HIDDEN).to(dtype)
        y = torch.randn(len(ids), sum(WIDTHS)).to(dtype)
        start = y.clone()
        w.add_lora_linear(y, x, a, b, 0.5, WIDTHS)
        want = expected(start, x, a, b, torch.tensor(token_slots), 0.5)
        torch.testing.assert_close(y.float(), want, **tol)
        return plan, layout

    plan, layout = run([3, 40, 90, -1] * 6)
    assert layout.sources == (3, 40, 90)
    assert plan.kind == "padded" and plan.first_slot == 0  # the copy's own first matrices
    assert filled == [(0, 3), (1, 40), (2, 90)]

    plan, layout = run([40, 90, 7, -1] * 6)  # 3 left, 7 came: 7 takes 3's position
    assert layout.sources == (7, 40, 90) and plan.first_slot == 0
    assert filled[3:] == [(0, 7)]

    # A prompt of slot 90 (at position 2) beside decode rows: it runs apart, its
    # expands (bf16, AMX) added in place from vLLM's B of slot 90.
    plan, _ = run([90] * 130 + [40, 7, 40, 7, 90, 7])
    assert plan.kind == "padded" and plan.runs == ((2, 0, 130),)
    assert filled[4:] == []

    new_a, new_b = stacks(seed=16, slots=slots)
    for stacked, new in zip((*a, *b), (*new_a, *new_b), strict=True):
        stacked[40].copy_(new[40].to(dtype))  # as vLLM's set_lora does, slot 40 only
    slot_ids[40] = 500
    run([40, 90, 7, -1] * 6)
    assert filled[4:] == [(1, 40)]
