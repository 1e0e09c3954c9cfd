"""The run's plan: which examples form which micro-batch of which optimizer step.

The plan depends only on the example lengths, the settings and the seed, so
it is the same in every process: resuming needs nothing but the number of
the next step. Each epoch shuffles the examples with its own seeded order,
then packs them (or takes them one per row), then groups rows into
micro-batches and micro-batches into optimizer steps.

`batch_size: auto` is resolved here, from the data, before the plan is made
(`auto_batching`): a large set gets full micro-batches of `FULL_BATCH` rows,
and a small one gets enough optimizer steps to learn from, down to one
unpacked example per step.
"""

import math
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


FULL_BATCH = 4  # rows per micro-batch that `auto` uses once the data is large enough
ENOUGH_STEPS = 100  # optimizer steps `auto` aims for before it shrinks the batch
FEW_STEPS = 20  # below this many steps a run is warned that it may learn little


@dataclass(frozen=True)
class Batching:
    batch_size: int
    packing: bool
    steps: int  # optimizer steps of the whole run


def count_steps(rows: int, epochs: int, batch_size: int, grad_accum: int) -> int:
    return epochs * math.ceil(math.ceil(rows / batch_size) / grad_accum)


def auto_batching(
    lengths: list[int],
    *,
    epochs: int,
    grad_accum: int,
    packing: bool,
    max_length: int,
    seed: int,
    may_unpack: bool,
) -> Batching:
    """The largest micro-batch (≤ FULL_BATCH rows) that still gives ENOUGH_STEPS steps.

    With packing, a small set fits in a row or two: one optimizer step per
    epoch, and the adapter learns next to nothing. So when even one packed row
    per micro-batch gives too few steps, and packing was not asked for
    explicitly (`may_unpack`), the examples go one per row instead. When no
    size reaches ENOUGH_STEPS, the smallest batch (the most steps) is used.
    """
    options = [packing, False] if packing and may_unpack else [packing]
    for pack_rows in options:
        rows = len(rows_of(lengths, epoch_order(len(lengths), seed, 0), pack_rows, max_length))
        for size in range(FULL_BATCH, 0, -1):
            steps = count_steps(rows, epochs, size, grad_accum)
            if steps >= ENOUGH_STEPS:
                return Batching(size, pack_rows, steps)
    return Batching(1, pack_rows, count_steps(rows, epochs, 1, grad_accum))


def few_steps_advice(steps: int) -> str | None:
    """A warning for a plan with too few optimizer steps to learn much, or None."""
    if steps >= FEW_STEPS:
        return None
    return (
        f"only {steps} optimizer step{'s' * (steps != 1)} in this run: the adapter may learn "
        "little; add epochs (--epochs), use a smaller --batch-size or --grad-accum, "
        "--no-packing for a small data set, or more data"
    )
