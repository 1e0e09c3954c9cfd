"""Which slots of a LoRA weight stack hold a non-zero weight, kept up to date cheaply.

Contract: `NonzeroSlots().of(stack, slot_ids)` is the set of slots of a
`[slots, out, in]` (or `[slots, 1, out, in]`) stack with any non-zero
weight, given the adapter id vLLM says each slot holds (`lora_index_to_id`).

Why: loraplex serves no LoRA on the output head (adapters/validate.py), yet
vLLM runs the logits LoRA on every step once LoRA is on, a shrink and an
expand against a `[slots, vocab, rank]` stack: 5-8 ms of a 60 ms decode step
of SmolLM2 on 2 cores with 16 adapters in the batch. Adding zeros changes
nothing, so the wrapper skips the op when no slot holds a non-zero weight.

As in fused.py, vLLM writes a slot in place (bumping the stack's version
counter) and then names the adapter each slot holds; only the slots whose
id changed (`fused.changed_slots`) are read again.
"""

from dataclasses import dataclass

import torch

from loraplex.serve.cpu_lora_ops.fused import changed_slots
from loraplex.serve.cpu_lora_ops.ops import slot_stack


@dataclass(frozen=True)
class _Seen:
    version: int
    slot_ids: tuple[int | None, ...]
    nonzero: frozenset[int]


class NonzeroSlots:
    def __init__(self) -> None:
        self._seen: dict[int, _Seen] = {}

    def of(self, stack: torch.Tensor, slot_ids: list[int | None]) -> frozenset[int]:
        # The stacks live as long as the model, so their ids name them.
        seen = self._seen.get(id(stack))
        if seen is not None and seen.version == stack._version:
            return seen.nonzero
        weights = slot_stack(stack)
        known = None if seen is None else seen.slot_ids
        ids, changed = changed_slots(known, slot_ids, weights.shape[0])
        nonzero = set() if seen is None else set(seen.nonzero)
        for slot in changed:
            nonzero.discard(slot)
            if weights[slot].any():
                nonzero.add(slot)
        seen = _Seen(stack._version, ids, frozenset(nonzero))
        self._seen[id(stack)] = seen
        return seen.nonzero
