"""The run's plan: which examples form which micro-batch of which optimizer step.

The plan depends only on the example lengths, the settings and the seed, so
it is the same in every process: resuming needs nothing but the number of
the next step. Each epoch shuffles the examples with its own seeded order,
then packs them (or takes them one per row), then groups rows into
micro-batches and micro-batches into optimizer steps.
"""

import random
from dataclasses import dataclass

from loraplex.trainer.packing import pack

Row = tuple[int, ...]  # indices of the examples in one sequence of the batch
MicroBatch = tuple[Row, ...]


@dataclass(frozen=True)
class Step:
    epoch: int  # 0-based
    micro_batches: tuple[MicroBatch, ...]
    last_of_epoch: bool


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    order = list(range(count))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def rows_of(lengths: list[int], order: list[int], packing: bool, max_length: int) -> list[Row]:
    if packing:
        return [tuple(row) for row in pack(lengths, order, max_length)]
    return [(index,) for index in order]


def _chunks(items: list, size: int) -> list[tuple]:
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def plan_run(
    lengths: list[int],
    *,
    epochs: int,
    batch_size: int,
    grad_accum: int,
    packing: bool,
    max_length: int,
    seed: int,
) -> list[Step]:
    steps: list[Step] = []
    for epoch in range(epochs):
        rows = rows_of(lengths, epoch_order(len(lengths), seed, epoch), packing, max_length)
        micro_batches = _chunks(rows, batch_size)
        groups = _chunks(micro_batches, grad_accum)
        steps += [
            Step(epoch, group, last_of_epoch=k == len(groups) - 1) for k, group in enumerate(groups)
        ]
    return steps


def plan_eval(
    lengths: list[int], *, batch_size: int, packing: bool, max_length: int
) -> list[MicroBatch]:
    """Eval micro-batches: every example once, in file order."""
    return _chunks(rows_of(lengths, list(range(len(lengths))), packing, max_length), batch_size)
