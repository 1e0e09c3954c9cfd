"""The admission plan: which waiting requests vLLM sees this step, in what order.

Pure functions over the waiting queue and the running batch, no vLLM import,
so the policy is tested without an engine.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")


@dataclass
class AdmissionPlan(Generic[R]):
    order: list[R]  # the waiting queue vLLM's admission loop reads this step
    held: list[R]  # kept out of this step, returned to the queue's front after it
    draining: frozenset[int] = frozenset()  # resident adapters admitting nothing new


def plan_admission(
    waiting: Sequence[R],
    running_adapters: Counter[int],
    *,
    adapter_of: Callable[[R], int | None],
    arrival_of: Callable[[R], float],
    max_loras: int,
    now: float,
    max_wait: float,
    draining_before: frozenset[int] = frozenset(),
) -> AdmissionPlan[R]:
    """Plan one step; `waiting` is in first-come order, `running_adapters`
    counts running requests per adapter id (base requests not counted)."""
    resident = set(running_adapters)
    queued: Counter[int] = Counter()
    oldest: dict[int, float] = {}
    for request in waiting:
        adapter = adapter_of(request)
        if adapter is None or adapter in resident:
            continue
        queued[adapter] += 1
        oldest[adapter] = min(oldest.get(adapter, float("inf")), arrival_of(request))
    if not queued:
        return AdmissionPlan(list(waiting), [])

    aged = sorted((a for a in queued if now - oldest[a] >= max_wait), key=oldest.__getitem__)
    fresh = sorted((a for a in queued if a not in aged), key=lambda a: (-queued[a], oldest[a]))
    free = max(0, max_loras - len(resident))
    given_slots = set((aged + fresh)[:free])
    starving = [a for a in aged if a not in given_slots]
    # Only the adapters given a free slot go ahead of the rest: an aged one
    # without a slot must not take the slot that frees for an older one (a
    # drained adapter's held requests return to the queue's front).
    chosen = given_slots
    draining = _drain(starving, running_adapters, waiting, adapter_of, draining_before)

    order: list[R] = []
    later: list[R] = []
    held: list[R] = []
    for request in waiting:
        adapter = adapter_of(request)
        if adapter is None or (adapter in resident and adapter not in draining):
            order.append(request)
        elif adapter in draining:
            held.append(request)
        elif adapter in chosen:
            order.append(request)
        else:
            later.append(request)
    return AdmissionPlan(order + later, held, frozenset(draining))


def _drain(
    starving: list[int],
    running_adapters: Counter[int],
    waiting: Sequence[R],
    adapter_of: Callable[[R], int | None],
    draining_before: frozenset[int],
) -> set[int]:
    """Resident adapters to admit nothing new until their slot frees, one per
    starving adapter: those already draining first (so the choice never
    flaps between steps and a slot does free), then those with nothing
    queued (they drain anyway), then those with the fewest running requests."""
    if not starving:
        return set()
    has_waiting = {adapter_of(r) for r in waiting}
    candidates = sorted(
        running_adapters,
        key=lambda a: (a not in draining_before, a in has_waiting, running_adapters[a], a),
    )
    return set(candidates[: len(starving)])
