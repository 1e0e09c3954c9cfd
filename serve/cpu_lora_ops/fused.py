"""One shrink and one expand per LoRA module, over all of its slices at once.

vLLM applies a merged module's LoRA slice by slice: QKV is three shrinks and
three expands, gate/up two of each, each expand adding into a column slice of
the output. On the CPU each of those small matrix products costs far more in
dispatch than in arithmetic, so this module keeps, per module, a fused copy of
the slot stacks:

- `a`: the slices' A matrices side by side, `[slots, in, slices * rank]`;
- `b`: their B matrices as one block-diagonal matrix,
  `[slots, slices * rank, sum(output widths)]`;

and applies a module's LoRA as `y += (x @ a[slot]) @ b[slot]`: two products
and one add into the whole (contiguous) output, whatever the slice count.
The zeros of `b` cost a few times the expand's arithmetic, which at rank 16
is far less than the dispatches they save.

The copies follow vLLM's slot stacks without hooks: vLLM writes a slot in
place (bumping the stack's version counter) and then tells the punica
wrapper which adapter id each slot holds (`update_metadata`). A module whose
stacks' versions moved refreshes the slots whose id changed since its copy
was made; an id names one adapter's weights in vLLM, so an unchanged id is an
unchanged slot.
"""

from dataclasses import dataclass

import torch

from loraplex.serve.cpu_lora_ops.ops import slot_stack
from loraplex.serve.cpu_lora_ops.plan import Plan


@dataclass
class _Copy:
    versions: tuple[int, ...]
    slot_ids: list[int | None]
    a: torch.Tensor
    b: torch.Tensor


class FusedWeights:
    """The fused copies of every LoRA module's slot stacks in one model."""

    def __init__(self) -> None:
        self._copies: dict[tuple[int, ...], _Copy] = {}

    def get(
        self,
        a_stacked: tuple[torch.Tensor, ...],
        b_stacked: tuple[torch.Tensor, ...],
        widths: tuple[int, ...],
        slot_ids: list[int | None],
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) for one module, refreshed where vLLM rewrote a slot."""
        # The stacks live as long as the model, so their ids name the module.
        key = tuple(id(t) for t in a_stacked)
        versions = tuple(t._version for t in (*a_stacked, *b_stacked))
        copy = self._copies.get(key)
        if copy is not None and copy.versions == versions and copy.a.dtype == dtype:
            return copy.a, copy.b
        slots = a_stacked[0].shape[0]
        ids = list(slot_ids) + [None] * (slots - len(slot_ids))
        if copy is None or copy.a.dtype != dtype:
            copy = self._empty(a_stacked, b_stacked, widths, dtype)
            stale = range(slots)
        else:
            stale = [s for s in range(slots) if ids[s] != copy.slot_ids[s]]
        for slot in stale:
            self._fill(copy, slot, a_stacked, b_stacked, widths)
        copy.versions, copy.slot_ids = versions, ids[:slots]
        self._copies[key] = copy
        return copy.a, copy.b

    @staticmethod
    def _empty(a_stacked, b_stacked, widths, dtype) -> _Copy:
        first = slot_stack(a_stacked[0])
        slots, rank, fan_in = first.shape
        inner = rank * len(a_stacked)
        a = torch.zeros(slots, fan_in, inner, dtype=dtype)
        b = torch.zeros(slots, inner, sum(widths), dtype=dtype)
        return _Copy((), [None] * slots, a, b)

    @staticmethod
    def _fill(copy: _Copy, slot: int, a_stacked, b_stacked, widths) -> None:
        offset = 0
        for i, (a_i, b_i, width) in enumerate(zip(a_stacked, b_stacked, widths, strict=True)):
            a_i, b_i = slot_stack(a_i)[slot], slot_stack(b_i)[slot]  # [rank, in], [out, rank]
            rank = a_i.shape[0]
            columns = slice(i * rank, (i + 1) * rank)
            copy.a[slot, :, columns] = a_i.T
            # The adapter and the model may pad widths differently (as in vLLM's ops).
            used = min(width, b_i.shape[0])
            copy.b[slot, columns, offset : offset + used] = b_i[:used].T
            offset += width


def apply_fused(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    target: torch.Tensor,
    plan: Plan,
    scale: float,
) -> None:
    """target[r] += scale * (x[r] @ a[slot(r)]) @ b[slot(r)] for every planned row r.

    `x` is [rows, in] and `target` [rows, width] in the weights' dtype; rows
    without a slot are left alone.
    """
    if plan.kind == "runs":
        for slot, start, end in plan.runs:
            shrunk = torch.mm(x[start:end], a[slot])
            target[start:end].addmm_(shrunk, b[slot], alpha=scale)
    elif plan.kind == "padded":
        n_slots, max_rows = len(plan.slot_list), plan.max_rows
        block = x.index_select(0, plan.pad_sources).view(n_slots, max_rows, -1)
        # Every slot present (slots ascending, unique): the stack itself, no copy.
        every = n_slots == a.shape[0]
        a_used = a if every else a.index_select(0, plan.slots)
        b_used = b if every else b.index_select(0, plan.slots)
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
