"""Where each LoRA slot's weights sit in the fused copies: a batch's slots first.

Contract: `Positions.arrange(slots)` places the slots one batch uses at the
fused copies' first positions (0..k-1 for k slots), moving as few as it can,
and returns the `Layout`: which vLLM slot each of those positions holds, a
new object whenever that changes. `Layout.positions(token_slots)`
maps vLLM's slot index per row (-1: no LoRA) to positions in the copies.

Why: vLLM puts an adapter in its lowest free slot and evicts the least
recently used, so with many slots (sized to the load: 74 for SmolLM2 at
concurrency 16) the 16 adapters of a decode step sit anywhere in the stack.
A padded block then gathers their weights into a new stack in every module
of every step (`Plan.block_weights`): it reads, writes and reads again the
bytes that are the step's LoRA cost, 14% of the engine's time at 256
adapters. The fused copies are loraplex's own (fused.py), so their order
need not be vLLM's: with the batch's slots at 0..k-1, the block takes the
copies' first k matrices as they are. Requests stay for many steps, so a
slot moves when its request starts, not every step.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)  # compared by identity (fused.py): it holds a tensor
class Layout:
    """One batch's arrangement: position p of the fused copies holds vLLM's slot `sources[p]`."""

    sources: tuple[int, ...]
    # vLLM slot → position, with -1 → -1 as the last entry (indexing by -1 reads it)
    _position_of: torch.Tensor

    def positions(self, token_slots: torch.Tensor) -> torch.Tensor:
        """Each row's position in the fused copies (-1 where its slot is -1)."""
        return self._position_of[token_slots.to(torch.long)]


class Positions:
    """A permutation of vLLM's slots over the fused copies' positions, kept across batches."""

    def __init__(self) -> None:
        self._slot_at: list[int] = []  # position → slot
        self._layout: Layout | None = None

    def arrange(self, slots: list[int]) -> Layout:
        """The layout with `slots` (distinct, >= 0) at positions 0..len(slots)-1: a slot
        already there stays, each other one swaps with a slot the batch does not use."""
        self._grow(max(slots, default=-1) + 1)
        used = set(slots)
        position_of = {slot: p for p, slot in enumerate(self._slot_at)}
        outside = [slot for slot in slots if position_of[slot] >= len(slots)]
        free = [p for p in range(len(slots)) if self._slot_at[p] not in used]
        for slot, p in zip(outside, free, strict=True):
            here = position_of[slot]
            self._slot_at[here], self._slot_at[p] = self._slot_at[p], slot
        sources = tuple(self._slot_at[: len(slots)])
        if self._layout is None or self._layout.sources != sources:
            self._layout = Layout(sources, self._lookup())
        return self._layout

    def _grow(self, slots: int) -> None:
        self._slot_at.extend(range(len(self._slot_at), slots))

    def _lookup(self) -> torch.Tensor:
        lookup = torch.empty(len(self._slot_at) + 1, dtype=torch.long)
        lookup[torch.tensor(self._slot_at, dtype=torch.long)] = torch.arange(len(self._slot_at))
        lookup[-1] = -1
        return lookup
