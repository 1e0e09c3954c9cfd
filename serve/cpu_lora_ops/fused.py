"""One shrink and one expand per LoRA module, over all of its slices at once.

vLLM applies a merged module's LoRA slice by slice: QKV is three shrinks and
three expands, gate/up two of each, each expand adding into a column slice of
the output. On the CPU each of those small matrix products costs far more in
dispatch than in arithmetic, so this module keeps, per module, a fused copy of
the slot stacks:

- A: the slices' A matrices side by side, `slices * rank` wide;
- B: their B matrices as one block-diagonal matrix, `slices * rank` by the
  sum of the output widths;

and applies a module's LoRA as `y += (x @ A[slot]) @ B[slot]`: two products
and one add into the whole (contiguous) output, whatever the slice count.
The zeros of B cost a few times the expand's arithmetic, which at rank 16
is far less than the dispatches they save. The inner width `slices * rank`
is padded with zeros to a multiple of 32 (packed.K_ALIGN).

Where vLLM's AMX kernel can run the products (packed.py), the copy is kept
in that kernel's packed layout (`a`: `[slots, inner, in]`, `b`:
`[slots, out, inner]`) and each slot's rows get two kernel calls; elsewhere
it is plain (`a`: `[slots, in, inner]`, `b`: `[slots, inner, out]`) for
torch's products. Both take the same memory.

The copies follow vLLM's slot stacks without hooks: vLLM writes a slot in
place (bumping the stack's version counter) and then tells the punica
wrapper which adapter id each slot holds (`update_metadata`). A module whose
stacks' versions moved refreshes the slots whose id changed since its copy
was made; an id names one adapter's weights in vLLM, so an unchanged id is an
unchanged slot.
"""

from dataclasses import dataclass

import torch

from loraplex.serve.cpu_lora_ops import packed as amx
from loraplex.serve.cpu_lora_ops.ops import slot_stack
from loraplex.serve.cpu_lora_ops.plan import Plan


def inner_width(slices: int, rank: int) -> int:
    """The fused copy's inner width: `slices * rank`, padded to packed.K_ALIGN."""
    return -(-slices * rank // amx.K_ALIGN) * amx.K_ALIGN


@dataclass
class FusedCopy:
    """One module's fused copy of its slot stacks."""

    a: torch.Tensor
    b: torch.Tensor
    packed: bool  # the AMX kernel's layout (see the module docstring)
    width: int  # sum of the output widths
    versions: tuple[int, ...] = ()
    slot_ids: tuple[int | None, ...] = ()


class FusedWeights:
    """The fused copies of every LoRA module's slot stacks in one model."""

    def __init__(self) -> None:
        self._copies: dict[tuple[int, torch.dtype, bool], FusedCopy] = {}

    def get(
        self,
        a_stacked: tuple[torch.Tensor, ...],
        b_stacked: tuple[torch.Tensor, ...],
        widths: tuple[int, ...],
        slot_ids: list[int | None],
        dtype: torch.dtype,
    ) -> FusedCopy:
        """The module's copy, refreshed where vLLM rewrote a slot."""
        # The stacks live as long as the model, so an id names the module. The
        # kernel switch is part of the key only for benchmarks that flip it.
        key = (id(a_stacked[0]), dtype, amx.enabled)
        versions = tuple(t._version for t in (*a_stacked, *b_stacked))
        copy = self._copies.get(key)
        if copy is not None and copy.versions == versions:
            return copy  # the hot path: once per module per forward pass
        slots, rank, fan_in = slot_stack(a_stacked[0]).shape
        inner, width = inner_width(len(a_stacked), rank), sum(widths)
        packed = amx.usable(dtype, fan_in, inner) and amx.usable(dtype, inner, width)
        if copy is None:
            copy, known = _empty(slots, fan_in, inner, width, dtype, packed), None
        else:
            known = copy.slot_ids
        ids, stale = changed_slots(known, slot_ids, slots)
        for slot in stale:
            _fill(copy, slot, a_stacked, b_stacked, widths, inner)
        copy.versions, copy.slot_ids = versions, ids
        self._copies[key] = copy
        return copy


def changed_slots(
    known: tuple[int | None, ...] | None, slot_ids: list[int | None], slots: int
) -> tuple[tuple[int | None, ...], list[int]]:
    """vLLM's adapter id per slot as a tuple of `slots` (its list may be shorter
    than the stack: missing slots hold nothing), and the slots whose id differs
    from `known`, the ids recorded at the last look (None: never looked, so all).
    An id names one adapter's weights in vLLM, so these are the slots it rewrote."""
    ids = (tuple(slot_ids) + (None,) * (slots - len(slot_ids)))[:slots]
    if known is None:
        return ids, list(range(slots))
    return ids, [s for s in range(slots) if ids[s] != known[s]]


def _empty(slots: int, fan_in: int, inner: int, width: int, dtype, packed: bool) -> FusedCopy:
    # Zeros pack to zeros, so the packed layout starts the same way.
    a_shape = (slots, inner, fan_in) if packed else (slots, fan_in, inner)
    b_shape = (slots, width, inner) if packed else (slots, inner, width)
    a, b = torch.zeros(a_shape, dtype=dtype), torch.zeros(b_shape, dtype=dtype)
    return FusedCopy(a, b, packed, width, slot_ids=(None,) * slots)


def _fill(copy: FusedCopy, slot: int, a_stacked, b_stacked, widths, inner: int) -> None:
    fan_in, dtype = slot_stack(a_stacked[0]).shape[2], copy.a.dtype
    a = torch.zeros(inner, fan_in, dtype=dtype)  # A side by side, as [inner, in]
    b = torch.zeros(copy.width, inner, dtype=dtype)  # B block-diagonal, as [out, inner]
    offset = 0
    for i, (a_i, b_i, width) in enumerate(zip(a_stacked, b_stacked, widths, strict=True)):
        a_i, b_i = slot_stack(a_i)[slot], slot_stack(b_i)[slot]  # [rank, in], [out, rank]
        rank = a_i.shape[0]
        a[i * rank : (i + 1) * rank] = a_i
        # The adapter and the model may pad widths differently (as in vLLM's ops).
        used = min(width, b_i.shape[0])
        b[offset : offset + used, i * rank : (i + 1) * rank] = b_i[:used]
        offset += width
    if copy.packed:
        copy.a[slot], copy.b[slot] = amx.pack(a), amx.pack(b)
    else:
        copy.a[slot], copy.b[slot] = a.T, b.T


def apply_fused(
    x: torch.Tensor, copy: FusedCopy, target: torch.Tensor, plan: Plan, scale: float
) -> None:
    """target[r] += scale * (x[r] @ A[slot(r)]) @ B[slot(r)] for every planned row r.

    `x` is [rows, in] and `target` [rows, copy.width] in the copy's dtype;
    rows without a slot are left alone.
    """
    if copy.packed:
        _apply_packed(x.contiguous(), copy, target, plan, scale)
    else:
        _apply_plain(x, copy.a, copy.b, target, plan, scale)


def _apply_packed(x, copy: FusedCopy, target, plan: Plan, scale: float) -> None:
    inner = copy.a.shape[1]
    if plan.kind == "runs":
        for slot, start, end in plan.runs:
            shrunk = x.new_empty(end - start, inner)
            amx.linear(shrunk, x[start:end], copy.a[slot])
            out = x.new_empty(end - start, copy.width)
            amx.linear(out, shrunk, copy.b[slot])
            target[start:end].add_(out, alpha=scale)
        return
    if plan.kind == "padded":
        n_slots, max_rows = plan.block_slots, plan.max_rows
        block = x.index_select(0, plan.pad_sources).view(n_slots, max_rows, -1)
        a_used, b_used = plan.block_weights(copy.a), plan.block_weights(copy.b)
        shrunk = x.new_empty(n_slots, max_rows, inner)
        amx.bmm(shrunk, block, a_used)
        # One extra zero row: what rows without a slot gather.
        out = x.new_empty(n_slots * max_rows + 1, copy.width)
        out[-1].zero_()
        amx.bmm(out[:-1].view(n_slots, max_rows, -1), shrunk, b_used)
        target.add_(out.index_select(0, plan.row_sources), alpha=scale)
        return
    # Sorted: rows packed by slot, two kernel calls per slot (no weight copies).
    rows = x.index_select(0, plan.rows)
    shrunk = x.new_empty(rows.shape[0], inner)
    out = x.new_empty(rows.shape[0], copy.width)
    for slot, (start, end) in zip(plan.slot_list, plan.bounds, strict=True):
        amx.linear(shrunk[start:end], rows[start:end], copy.a[slot])
        amx.linear(out[start:end], shrunk[start:end], copy.b[slot])
    target.index_add_(0, plan.rows, out, alpha=scale)


def _apply_plain(x, a, b, target, plan: Plan, scale: float) -> None:
    if plan.kind == "runs":
        for slot, start, end in plan.runs:
            shrunk = torch.mm(x[start:end], a[slot])
            target[start:end].addmm_(shrunk, b[slot], alpha=scale)
    elif plan.kind == "padded":
        n_slots, max_rows = plan.block_slots, plan.max_rows
        block = x.index_select(0, plan.pad_sources).view(n_slots, max_rows, -1)
        a_used, b_used = plan.block_weights(a), plan.block_weights(b)
        # One extra zero row: what rows without a slot gather.
        out = torch.empty(n_slots * max_rows + 1, target.shape[1], dtype=target.dtype)
        out[-1].zero_()
        torch.bmm(torch.bmm(block, a_used), b_used, out=out[:-1].view(n_slots, max_rows, -1))
        target.add_(out.index_select(0, plan.row_sources), alpha=scale)
    elif plan.kind == "sorted":
        rows = x.index_select(0, plan.rows)
        out = torch.empty(rows.shape[0], target.shape[1], dtype=target.dtype)
        for slot, (start, end) in zip(plan.slot_list, plan.bounds, strict=True):
            torch.mm(torch.mm(rows[start:end], a[slot]), b[slot], out=out[start:end])
        target.index_add_(0, plan.rows, out, alpha=scale)
