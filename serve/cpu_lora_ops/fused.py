"""One shrink and few expands per LoRA module, over all of its slices at once.

vLLM applies a merged module's LoRA slice by slice: QKV is three shrinks and
three expands, gate/up two of each, each expand adding into a column slice of
the output. On the CPU each of those small matrix products costs far more in
dispatch than in arithmetic, so this module keeps, per module, a fused copy of
the slot stacks and applies a module's LoRA as `y += (x @ A[slot]) @ B[slot]`:
one shrink over the slices' A matrices side by side (`slices * k` wide, k the
rank rounded up to even), then the expand into the whole (contiguous) output.
The inner width is padded with zeros to a multiple of 32 (packed.N_ALIGN).

Where vLLM's AMX kernel can run the products (packed.py), the copy is kept
in that kernel's layout: `a` is `[slots, inner, in]`, and `b` holds one
`[slots, out_i, k]` stack per slice, each expand writing its column slice of
the output straight from its columns of the shrunk rows. A block-diagonal B
would take one product fewer per extra slice but read its zeros: at rank 16
they were most of the bytes a 16-adapter decode step reads (block-diagonal
QKV and gate/up, k padded to 32), and those reads were the step's LoRA cost.
The kernel cannot add into its output, so each expand writes a buffer that
is then added to the layer's output; for a run of many rows (a prompt) that
add costs more than the products, and torch's `addmm_` adds the expands in
place instead, reading vLLM's own B stacks as they are (ADDMM_ROWS).
Elsewhere the copy is plain for torch's products: `a` is `[slots, in, inner]`
and `b` one block-diagonal `[slots, inner, sum(out)]`, as before the kernel:
there a product's fixed cost is far more than its zeros' arithmetic at rank 16.
float16 on an AMX-FP16 CPU takes the packed layout too; no such CPU has run it.

The copies are in the order of a `positions.Layout`, not vLLM's: one
batch's slots at the first positions, so that a padded block takes the
copies' first matrices as they are (positions.py says why). They follow
vLLM's slot stacks without hooks: vLLM writes a slot in place (bumping the
stack's version counter) and then tells the punica wrapper which adapter id
each slot holds (`update_metadata`). A module whose stacks' versions or
layout changed copies, into each of the layout's positions, the slot it
names, unless that position already holds the slot's adapter: an id names
one adapter's weights in vLLM, so an unchanged id is an unchanged slot.
Positions the layout does not name are left as they are; no row reads them.
"""

from dataclasses import dataclass, field

import torch

from loraplex.serve.cpu_lora_ops import packed as amx
from loraplex.serve.cpu_lora_ops.ops import scatter, slot_stack
from loraplex.serve.cpu_lora_ops.plan import Plan
from loraplex.serve.cpu_lora_ops.positions import Layout

ADDMM_ROWS = 128
"""A run of at least this many rows (a prefill) adds its expands with torch's
addmm_ from vLLM's B: the kernel cannot accumulate, and for many rows its
product plus a bf16 add_ costs 2-3x as much (bench_lora_step)."""


def slice_k(rank: int) -> int:
    """Each slice's columns in the shrunk rows: the rank, rounded up to even (the
    kernel's VNNI layout pairs k; vLLM allows rank 1)."""
    return rank + rank % 2


def inner_width(slices: int, rank: int) -> int:
    """The fused A's inner width: `slices * slice_k(rank)`, padded to packed.N_ALIGN."""
    return -(-slices * slice_k(rank) // amx.N_ALIGN) * amx.N_ALIGN


@dataclass
class FusedCopy:
    """One module's fused copy of its slot stacks (layouts: the module docstring)."""

    a: torch.Tensor
    b: tuple[torch.Tensor, ...]  # packed: one stack per slice; plain: one block-diagonal
    packed: bool
    widths: tuple[int, ...]  # each slice's output width
    k: int  # each slice's columns in the shrunk rows (slice_k)
    versions: tuple[int, ...] = ()
    layout: Layout | None = None  # the layout the copy was last brought in line with
    ids: list[int | None] = field(default_factory=list)  # the adapter id at each position
    sources: list[int | None] = field(default_factory=list)  # vLLM's slot of each position's id
    # vLLM's own B stacks, `[slots, out, rank]` views (packed layout, same dtype):
    # the expands of long runs read them as they are (see _add_expands).
    vllm_b: tuple[torch.Tensor, ...] | None = None

    @property
    def width(self) -> int:
        return sum(self.widths)


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
        layout: Layout,
        dtype: torch.dtype,
    ) -> FusedCopy:
        """The module's copy, with the adapter of the slot `layout` names at each of its
        positions (slots that hold no adapter, per `slot_ids`, are skipped)."""
        # The stacks live as long as the model, so an id names the module. The
        # kernel switch is part of the key only for benchmarks that flip it.
        key = (id(a_stacked[0]), dtype, amx.enabled)
        versions = tuple(t._version for t in (*a_stacked, *b_stacked))
        copy = self._copies.get(key)
        if copy is not None and copy.versions == versions and copy.layout is layout:
            return copy  # the hot path: once per module per forward pass
        if copy is None:
            copy = _empty(a_stacked, tuple(widths), dtype)
            if copy.packed and all(b.dtype == dtype for b in b_stacked):
                copy.vllm_b = tuple(slot_stack(b) for b in b_stacked)
        for position, slot in enumerate(layout.sources):
            wanted = slot_ids[slot] if slot < len(slot_ids) else None
            if wanted is not None and copy.ids[position] != wanted:
                _fill(copy, position, slot, a_stacked, b_stacked)
                copy.ids[position] = wanted
            copy.sources[position] = slot
        copy.versions, copy.layout = versions, layout
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


def _empty(a_stacked, widths: tuple[int, ...], dtype: torch.dtype) -> FusedCopy:
    slots, rank, fan_in = slot_stack(a_stacked[0]).shape
    k = slice_k(rank)
    inner = inner_width(len(widths), rank)
    packed = amx.usable(dtype, fan_in, inner) and all(amx.usable(dtype, k, w) for w in widths)
    # Uninitialised: _fill writes a whole slot, and until then no row reads it
    # (a padded block's rows for an absent slot are computed and dropped). The
    # pages of slots never filled are never touched, so they cost no memory.
    if packed:
        a = torch.empty(slots, inner, fan_in, dtype=dtype)
        b = tuple(torch.empty(slots, width, k, dtype=dtype) for width in widths)
    else:
        a = torch.empty(slots, fan_in, inner, dtype=dtype)
        b = (torch.empty(slots, inner, sum(widths), dtype=dtype),)
    return FusedCopy(a, b, packed, widths, k, ids=[None] * slots, sources=[None] * slots)


def _fill(copy: FusedCopy, position: int, slot: int, a_stacked, b_stacked) -> None:
    """Copy vLLM's slot `slot` of every slice into the fused copy's `position`, in
    place: the position's padding is zeroed, then each slice's A rows and B written."""
    k, offset = copy.k, 0
    for stack in (copy.a, *copy.b):
        stack[position].zero_()
    for i, (a_i, b_i, width) in enumerate(zip(a_stacked, b_stacked, copy.widths, strict=True)):
        a_i, b_i = slot_stack(a_i)[slot], slot_stack(b_i)[slot]  # [rank, in], [out, rank]
        rank = a_i.shape[0]
        # The adapter and the model may pad widths differently (as in vLLM's ops).
        used = min(width, b_i.shape[0])
        if copy.packed:
            amx.write_rows(copy.a[position], i * k, a_i)
            b_rows = b_i[:used] if rank == k else torch.nn.functional.pad(b_i[:used], (0, k - rank))
            amx.write_rows(copy.b[i][position], 0, b_rows)
        else:
            copy.a[position, :, i * k : i * k + rank] = a_i.T
            copy.b[0][position, i * k : i * k + rank, offset : offset + used] = b_i[:used].T
        offset += width


def apply_fused(
    x: torch.Tensor, copy: FusedCopy, target: torch.Tensor, plan: Plan, scale: float
) -> None:
    """target[r] += scale * (x[r] @ A[p(r)]) @ B[p(r)] for every planned row r.

    `plan` groups rows by position in the copy (`Layout.positions`; a plan's
    "slots" are positions here). `x` is [rows, in] and `target` [rows,
    copy.width] in the copy's dtype; rows without a position are left alone.
    """
    if copy.packed:
        _apply_packed(x.contiguous(), copy, target, plan, scale)
    else:
        _apply_plain(x, copy.a, copy.b[0], target, plan, scale)


def _apply_packed(x, copy: FusedCopy, target, plan: Plan, scale: float) -> None:
    inner = copy.a.shape[1]
    if plan.kind == "padded":
        n_slots, max_rows = plan.block_slots, plan.max_rows
        block = x.index_select(0, plan.pad_sources).view(n_slots, max_rows, -1)
        shrunk = x.new_empty(n_slots, max_rows, inner)
        amx.bmm(shrunk, block, plan.block_weights(copy.a))
        out = x.new_empty(n_slots * max_rows, copy.width)
        _expand(amx.bmm, out.view(n_slots, max_rows, -1), shrunk, copy, plan.block_weights)
        _add_block_rows(target, out, plan, scale)
    elif plan.kind == "sorted":
        # Rows packed by slot, one shrink and the expands per slot (no weight copies).
        rows = x.index_select(0, plan.rows)
        shrunk = x.new_empty(rows.shape[0], inner)
        out = x.new_empty(rows.shape[0], copy.width)
        for slot, (start, end) in zip(plan.slot_list, plan.bounds, strict=True):
            amx.linear(shrunk[start:end], rows[start:end], copy.a[slot])
            part = out[start:end]
            _expand(amx.linear, part, shrunk[start:end], copy, lambda stack, slot=slot: stack[slot])
        target.index_add_(0, plan.rows, out, alpha=scale)
    for position, start, end in plan.runs:
        shrunk = x.new_empty(end - start, inner)
        amx.linear(shrunk, x[start:end], copy.a[position])
        if end - start >= ADDMM_ROWS and copy.vllm_b is not None:
            _add_expands(target[start:end], shrunk, copy, copy.sources[position], scale)
            continue
        out = x.new_empty(end - start, copy.width)
        _expand(amx.linear, out, shrunk, copy, lambda stack, p=position: stack[p])
        target[start:end].add_(out, alpha=scale)


def _add_block_rows(target, out, plan: Plan, scale: float) -> None:
    """target[r] += scale * out[r's padded position] for the padded block's rows only:
    a few decode rows beside long prompts touch a few rows, not the batch. A block
    without padding (a decode step of one row per adapter) is in `plan.rows`' order
    already, and one index_add_ adds it: in every module of such a step, the
    gather and the scaling were 4% of the engine's time at 16 adapters (py-spy)."""
    block_rows = out if plan.pad_free else out.index_select(0, plan.pad_positions)
    scatter(target, plan.rows, block_rows, add=True, alpha=scale)


def _add_expands(target, shrunk, copy: FusedCopy, slot: int, scale: float) -> None:
    """target[:, slice i's columns] += scale * shrunk's slice-i columns @ B_i[slot].T,
    with torch's addmm_ on vLLM's own B (`slot` is vLLM's), which accumulates in place."""
    offset, k = 0, copy.k
    for i, (stack, width) in enumerate(zip(copy.vllm_b, copy.widths, strict=True)):
        b = stack[slot]  # [out, rank]
        rank, used = b.shape[1], min(width, b.shape[0])
        columns = shrunk[:, i * k : i * k + rank]
        target[:, offset : offset + used].addmm_(columns, b[:used].T, alpha=scale)
        offset += width


def _expand(product, out: torch.Tensor, shrunk: torch.Tensor, copy: FusedCopy, weights) -> None:
    """out[..., slice i's columns] = shrunk[..., slice i's k columns] @ B_i, for every
    slice, with `weights(stack)` picking the B stack's matrices for the product."""
    offset, k = 0, copy.k
    for i, (stack, width) in enumerate(zip(copy.b, copy.widths, strict=True)):
        columns = shrunk[..., i * k : (i + 1) * k]
        product(out[..., offset : offset + width], columns, weights(stack))
        offset += width


def _apply_plain(x, a, b, target, plan: Plan, scale: float) -> None:
    if plan.kind == "padded":
        n_slots, max_rows = plan.block_slots, plan.max_rows
        block = x.index_select(0, plan.pad_sources).view(n_slots, max_rows, -1)
        a_used, b_used = plan.block_weights(a), plan.block_weights(b)
        out = torch.bmm(torch.bmm(block, a_used), b_used).view(n_slots * max_rows, -1)
        _add_block_rows(target, out, plan, scale)
    elif plan.kind == "sorted":
        rows = x.index_select(0, plan.rows)
        out = torch.empty(rows.shape[0], target.shape[1], dtype=target.dtype)
        for slot, (start, end) in zip(plan.slot_list, plan.bounds, strict=True):
            torch.mm(torch.mm(rows[start:end], a[slot]), b[slot], out=out[start:end])
        target.index_add_(0, plan.rows, out, alpha=scale)
    for slot, start, end in plan.runs:
        shrunk = torch.mm(x[start:end], a[slot])
        target[start:end].addmm_(shrunk, b[slot], alpha=scale)
