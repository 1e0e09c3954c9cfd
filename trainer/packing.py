"""Batches: examples packed into full rows (or padded), as tensors the loss reads.

Labels are shifted *per example* before examples are concatenated: the last
token of one example never gets the first token of the next as its target.
In a packed row, position ids restart at 0 for every example; with no 2-D
attention mask, transformers reads those restarts as sequence boundaries
and builds a block-diagonal causal mask (`find_packed_sequence_indices` in
`transformers.masking_utils`), so no token attends across examples. The
tail of a row is padding laid out as one more sequence (its own positions,
no targets): it attends only to itself and changes nothing. With per-example
attention (attention.py) the rows of a micro-batch go end to end in a single
sequence instead, and there is no padding to compute at all.
"""

from dataclasses import dataclass

import torch

from loraplex.trainer.render import IGNORE, Example


@dataclass
class Batch:
    """One micro-batch. `targets[b, t]` is the token position t must predict, or IGNORE."""

    input_ids: torch.Tensor
    targets: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None  # None for packed rows (positions say it all)

    @property
    def trained_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())

    def untrained(self) -> "Batch":
        """The same rows with nothing to learn: a filler for a rank short of work."""
        return Batch(
            self.input_ids,
            torch.full_like(self.targets, IGNORE),
            self.position_ids,
            self.attention_mask,
        )

    def to(self, device: torch.device | str) -> "Batch":
        mask = self.attention_mask
        return Batch(
            self.input_ids.to(device),
            self.targets.to(device),
            self.position_ids.to(device),
            None if mask is None else mask.to(device),
        )


def shifted_targets(example: Example) -> list[int]:
    """targets[t] = labels[t + 1]: what position t predicts; the last position predicts nothing."""
    return [*example.labels[1:], IGNORE]


def pack(lengths: list[int], order: list[int], capacity: int) -> list[list[int]]:
    """First-fit: place examples (in `order`) into rows of at most `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        size = lengths[index]
        for r, free in enumerate(room):
            if size <= free:
                rows[r].append(index)
                room[r] -= size
                break
        else:
            rows.append([index])
            room.append(capacity - size)
    return rows


def collate_packed(examples: list[Example], rows: list[list[int]], length: int, pad_id: int):
    """Rows of concatenated examples, each `length` tokens long."""
    ids, targets, positions = [], [], []
    for row in rows:
        row_ids: list[int] = []
        row_targets: list[int] = []
        row_positions: list[int] = []
        for index in row:
            example = examples[index]
            row_ids += example.input_ids
            row_targets += shifted_targets(example)
            row_positions += range(len(example))
        pad = length - len(row_ids)
        if pad < 0:
            raise ValueError(f"row of {len(row_ids)} tokens does not fit in {length}")
        ids.append(row_ids + [pad_id] * pad)
        targets.append(row_targets + [IGNORE] * pad)
        positions.append(row_positions + list(range(pad)))
    return Batch(_tensor(ids), _tensor(targets), _tensor(positions), attention_mask=None)


def collate_padded(examples: list[Example], indices: list[int], pad_id: int) -> Batch:
    """One example per row, right-padded to the longest, with a 2-D attention mask."""
    length = max(len(examples[i]) for i in indices)
    ids, targets, mask = [], [], []
    for index in indices:
        example = examples[index]
        pad = length - len(example)
        ids.append(example.input_ids + [pad_id] * pad)
        targets.append(shifted_targets(example) + [IGNORE] * pad)
        mask.append([1] * len(example) + [0] * pad)
    positions = [list(range(length))] * len(indices)
    return Batch(_tensor(ids), _tensor(targets), _tensor(positions), _tensor(mask))


def _tensor(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def collate_flat(examples: list[Example], rows) -> Batch:
    """All examples of the micro-batch end to end in one sequence: no padding at all.

    Only for per-example attention (attention.py), whose cost does not grow
    with the length of the sequence, only with the lengths of the examples.
    """
    indices = [i for row in rows for i in row]
    length = sum(len(examples[i]) for i in indices)
    return collate_packed(examples, [indices], length, pad_id=0)


def collate(examples: list[Example], rows, packing: bool, pad_id: int, flat: bool = False):
    """A micro-batch of the plan (rows of example indices) as tensors."""
    if packing and flat:
        return collate_flat(examples, rows)
    if packing:
        length = max(sum(len(examples[i]) for i in row) for row in rows)
        return collate_packed(examples, [list(row) for row in rows], length, pad_id)
    return collate_padded(examples, [row[0] for row in rows], pad_id)
