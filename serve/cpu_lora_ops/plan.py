"""How one batch's tokens map onto LoRA slots: computed once, reused by every layer.

vLLM hands each LoRA op the batch's slot index per token (or per run of
tokens, for the `sgmv_*` ops), -1 meaning "no LoRA". Every LoRA layer of a
forward pass gets the same indices, so the grouping is computed on the first
op call of a forward pass and found again by content (a cheap `torch.equal`
on a few dozen integers) on the ~14 calls per transformer block that follow.

A `Plan` picks one of three ways to run an op:

- `runs`: contiguous row ranges, one slot each (one adapter for the whole
  batch, a few requests, or prompts of any number of adapters): one matmul
  per range on row slices, no gather, no scatter.
- `padded`: many interleaved rows (decode steps mixing requests): the rows of
  each slot are packed into a zero-padded `[slots, max_rows, in]` block and
  multiplied with one `bmm`, so the cost does not grow with the number of
  adapters in the batch. When the slots present are a compact range of the
  stack (vLLM fills the lowest free slot), the block spans that range, so
  the weights are the stack's own slice rather than a gathered copy.
- `sorted`: like `padded`, but one matmul per slot over its packed rows; used
  when the slots' row counts are so uneven that padding would waste more than
  it saves.

Long runs stay out of the block and run as `runs` do (`Plan.runs`): every
run of LONG_RUN rows or more (a prompt), and the fewest of the longest
others (at most long_runs_apart) that let the rest pad little. Gathering a
prompt into a block, and adding the block's results back, costs more than its
products: for 16 prompts of 16 adapters, 2-3x the whole LoRA work of the step
(bench_lora_step).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

MAX_RUNS = 4
"""At most this many contiguous ranges are run as slices (beyond, a padded bmm wins)."""

long_runs_apart = MAX_RUNS
"""At most this many long runs are left out of a padded block; bench_lora_step sets 0
to compare with every row in the block (or `sorted`), as before."""

LONG_RUN = 64
"""A run of at least this many rows (a prompt) always runs on its own, however
many there are: a wave of prompts of many adapters is then one product per
prompt on its rows, with the expands added in place (fused.ADDMM_ROWS), rather
than a padded block whose gathers and adds cost more than its products."""

long_run = LONG_RUN
"""bench_lora_step sets it out of reach, to compare with the block as before."""

_CACHE_SIZE = 4
"""Plans kept: linear layers (`sgmv`) and the logits (`bgmv`) of one step may differ."""


@dataclass(frozen=True)
class Plan:
    """The rows of a batch grouped by LoRA slot (rows with slot -1 appear nowhere)."""

    kind: str  # "none" | "runs" | "padded" | "sorted"
    num_rows: int
    # (slot, start, end): every run (runs), or the long runs left out of the block (padded, sorted)
    runs: tuple[tuple[int, int, int], ...] = ()
    rows: torch.Tensor | None = None  # the other rows with a slot, grouped by slot (padded, sorted)
    slots: torch.Tensor | None = None  # slots present, ascending (padded, sorted)
    slot_list: tuple[int, ...] = ()
    bounds: tuple[tuple[int, int], ...] = ()  # each slot's range in `rows` (sorted)
    max_rows: int = 0  # rows per slot in the padded block (padded)
    first_slot: int | None = None  # the block's slots are a range from here (padded), else `slots`
    pad_positions: torch.Tensor | None = None  # each of `rows`' position in the padded block
    pad_sources: torch.Tensor | None = None  # the row each padded position is copied from
    row_sources: torch.Tensor | None = None  # each row's padded position; no slot: one past the end

    @property
    def block_slots(self) -> int:
        """Slot groups in the padded block (padded)."""
        return 0 if self.pad_sources is None else self.pad_sources.numel() // self.max_rows

    @property
    def pad_free(self) -> bool:
        """The padded block holds `rows` exactly, in order (padded): no padding row."""
        return self.pad_sources is not None and self.pad_sources.numel() == self.rows.numel()

    def block_weights(self, stack: torch.Tensor) -> torch.Tensor:
        """A slot stack's matrices for the padded block's groups (padded): the
        stack's own slice for a range, else a copy of the slots present."""
        if self.first_slot is None:
            return stack.index_select(0, self.slots)
        return stack[self.first_slot : self.first_slot + self.block_slots]


def plan_for_tokens(token_slots: torch.Tensor) -> Plan:
    """The plan for one slot index per row (the `bgmv_*` ops' indices)."""
    return _cached("tokens", (token_slots,), lambda: build(token_slots))


def plan_for_runs(run_slots: torch.Tensor, run_lengths: torch.Tensor) -> Plan:
    """The plan for runs of rows sharing a slot (the `sgmv_*` ops' metadata)."""
    return _cached(
        "runs",
        (run_slots, run_lengths),
        lambda: build(torch.repeat_interleave(run_slots, run_lengths)),
    )


_cache: list[tuple[str, tuple[torch.Tensor, ...], Plan]] = []


def _cached(form: str, key: tuple[torch.Tensor, ...], build: Callable[[], Plan]) -> Plan:
    # `form` matters: per-run slots [-1, 0] (runs of 12 rows) equal the
    # per-row slots [-1, 0] of the two sequences' sampled rows, not their plan.
    for cached_form, cached_key, plan in _cache:
        if cached_form == form and all(
            a.shape == b.shape and torch.equal(a, b) for a, b in zip(key, cached_key, strict=True)
        ):
            return plan
    plan = build()
    # Clones: vLLM refills the same index buffers in place every step.
    _cache.insert(0, (form, tuple(k.clone() for k in key), plan))
    del _cache[_CACHE_SIZE:]
    return plan


def build(token_slots: torch.Tensor) -> Plan:
    """The plan for one slot index per row, uncached (plan_for_tokens caches it)."""
    token_slots = token_slots.to(torch.long)
    n = token_slots.numel()
    run_slots, run_lengths = torch.unique_consecutive(token_slots, return_counts=True)
    runs, start = [], 0
    for slot, length in zip(run_slots.tolist(), run_lengths.tolist(), strict=True):
        if slot >= 0:
            runs.append((slot, start, start + length))
        start += length
    if not runs:
        return Plan("none", n)
    prompts = [run for run in runs if run[2] - run[1] >= long_run]
    rest = [run for run in runs if run[2] - run[1] < long_run]
    if len(rest) <= MAX_RUNS:  # few runs besides the prompts (or few runs at all)
        return Plan("runs", n, runs=tuple(runs))

    chosen = _long_runs(rest)
    apart = sorted(prompts + (chosen or []), key=lambda run: run[1])
    in_block = token_slots >= 0
    for _, start, end in apart:
        in_block[start:end] = False
    rows = torch.nonzero(in_block).squeeze(1)
    order = torch.argsort(token_slots[rows], stable=True)
    rows = rows[order]
    slots, counts = torch.unique_consecutive(token_slots[rows], return_counts=True)
    count_list = counts.tolist()
    max_rows = max(count_list)
    slot_list = tuple(slots.tolist())
    if chosen is None:
        bounds, a = [], 0
        for c in count_list:
            bounds.append((a, a + c))
            a += c
        return Plan(
            "sorted", n, runs=tuple(apart), rows=rows, slots=slots, slot_list=slot_list,
            bounds=tuple(bounds),
        )  # fmt: skip
    # The padded block has one group of max_rows rows per slot. When the slots
    # present are a compact range of the stack, it has one group per slot of
    # that range (absent ones padding): the products then take the stacks'
    # slice as it is, with no copy of the weights. Compact: the range reads at
    # most twice the present slots' weights (a gather reads, writes and reads
    # them again) and pads no more rows than `sorted` allows.
    span = slot_list[-1] - slot_list[0] + 1
    compact = span <= 2 * len(slot_list) and _pads_little(span, max_rows, rows.numel())
    block_of_group = slots - slot_list[0] if compact else torch.arange(len(count_list))
    # Row i of `rows` is the j-th row of its slot group g: padded position block(g)*max_rows + j.
    group = torch.repeat_interleave(torch.arange(len(count_list)), counts)
    first = torch.cumsum(counts, 0) - counts
    positions = block_of_group[group] * max_rows + torch.arange(rows.numel()) - first[group]
    padded_size = (span if compact else len(count_list)) * max_rows
    # Padding positions copy any real row (row 0): their results are never read.
    sources = torch.zeros(padded_size, dtype=torch.long).index_copy_(0, positions, rows)
    row_sources = torch.full((n,), padded_size, dtype=torch.long).index_copy_(0, rows, positions)
    return Plan(
        "padded", n, runs=tuple(apart), rows=rows, slots=slots, slot_list=slot_list,
        max_rows=max_rows, first_slot=slot_list[0] if compact else None,
        pad_positions=positions, pad_sources=sources, row_sources=row_sources,
    )  # fmt: skip


def _pads_little(groups: int, height: int, rows: int) -> bool:
    """A block of `groups` groups of `height` rows holding `rows` rows wastes little."""
    return groups * height <= 2 * rows + 64


def _long_runs(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]] | None:
    """The fewest of the longest runs (at most long_runs_apart) that, left out of the padded
    block, let the other rows pad little; None when no such choice does (sorted).
    A run left out must be taller than the block it leaves: a short one is no
    cheaper apart, and it would cost products of its own."""
    by_length = sorted(runs, key=lambda run: run[1] - run[2])
    for taken in range(min(long_runs_apart, len(runs) - 1) + 1):
        rows_of_slot: dict[int, int] = {}
        for slot, start, end in by_length[taken:]:
            rows_of_slot[slot] = rows_of_slot.get(slot, 0) + end - start
        counts = rows_of_slot.values()
        if _pads_little(len(counts), max(counts), sum(counts)):
            shortest = by_length[taken - 1][2] - by_length[taken - 1][1] if taken else None
            if shortest is not None and shortest <= max(counts):
                return None
            return sorted(by_length[:taken], key=lambda run: run[1])
    return None
