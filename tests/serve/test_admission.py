"""The admission plan of the adapter-aware scheduler, without an engine."""

from collections import Counter
from dataclasses import dataclass

from loraplex.serve.scheduling.admission import plan_admission


@dataclass(frozen=True)
class Req:
    name: str
    adapter: int | None
    arrival: float


def plan(waiting, running, *, max_loras=2, now=100.0, max_wait=2.0, draining=frozenset()):
    return plan_admission(
        waiting,
        Counter(running),
        adapter_of=lambda r: r.adapter,
        arrival_of=lambda r: r.arrival,
        max_loras=max_loras,
        now=now,
        max_wait=max_wait,
        draining_before=draining,
    )


def names(requests):
    return [r.name for r in requests]


def test_free_slots_go_to_the_adapters_with_most_waiting_work():
    waiting = [Req("a1", 1, 99.0), Req("b1", 2, 99.1), Req("b2", 2, 99.2), Req("c1", 3, 99.3)]
    waiting += [Req("c2", 3, 99.4), Req("c3", 3, 99.5)]
    p = plan(waiting, {}, max_loras=2)
    # c (3 queued) and b (2) take the two slots; a moves behind them.
    assert names(p.order) == ["b1", "b2", "c1", "c2", "c3", "a1"]
    assert p.held == []


def test_resident_adapters_and_base_keep_first_come_order():
    waiting = [Req("x1", 9, 99.0), Req("base1", None, 99.1), Req("r1", 1, 99.2)]
    waiting += [Req("base2", None, 99.3), Req("r2", 1, 99.4)]
    p = plan(waiting, {1: 3, 2: 1}, max_loras=2)  # no free slot; x is fresh
    assert names(p.order) == ["base1", "r1", "base2", "r2", "x1"]
    assert p.held == []


def test_an_aged_adapter_drains_the_resident_adapter_with_fewest_running():
    waiting = [Req("cold", 9, 90.0), Req("h1", 1, 99.0), Req("h2", 2, 99.1), Req("b", None, 99.2)]
    p = plan(waiting, {1: 5, 2: 1}, max_loras=2, now=100.0, max_wait=2.0)
    assert names(p.held) == ["h2"]  # adapter 2 admits nothing new until its slot frees
    assert names(p.order) == ["h1", "b", "cold"]  # no slot is free yet


def test_an_aged_adapter_takes_a_free_slot_before_busier_adapters():
    waiting = [Req("cold", 9, 90.0)] + [Req(f"hot{i}", 1, 99.0 + i / 10) for i in range(5)]
    p = plan(waiting, {}, max_loras=1, now=100.0, max_wait=2.0)
    assert names(p.order)[0] == "cold"
    assert names(p.order)[1:] == [f"hot{i}" for i in range(5)]
    assert p.held == []


def test_a_resident_adapter_with_nothing_queued_is_drained_first():
    waiting = [Req("cold", 9, 90.0), Req("h1", 1, 99.0)]
    p = plan(waiting, {1: 1, 2: 4}, max_loras=2, now=100.0, max_wait=2.0)
    assert p.held == []  # adapter 2 frees its slot by itself
    assert names(p.order) == ["h1", "cold"]


def test_the_slot_a_drain_frees_goes_to_the_adapter_that_waited_longest():
    """The drained adapter's held request comes back at the queue's front and has
    aged too; the freed slot must still go to the older cold request (a
    continuous flood starved the cold adapter for 90 s on the real engine)."""
    waiting = [Req("drained", 1, 97.0), Req("cold", 9, 90.0), Req("h2", 2, 99.0)]
    p = plan(waiting, {2: 3}, max_loras=2, now=100.0, max_wait=2.0)
    assert names(p.order)[0] == "cold"
    assert names(p.order).index("drained") > names(p.order).index("cold")


def test_base_requests_are_never_held_or_moved_back():
    waiting = [Req("cold", 9, 90.0), Req("b1", None, 95.0), Req("h", 1, 96.0)]
    waiting += [Req("x", 7, 97.0), Req("b2", None, 98.0)]
    p = plan(waiting, {1: 1}, max_loras=1, now=100.0, max_wait=2.0)
    order = names(p.order)
    for base in ("b1", "b2"):
        assert order.index(base) <= names(waiting).index(base)
    assert base not in names(p.held)


def test_without_adapter_requests_the_queue_is_untouched():
    waiting = [Req("b1", None, 1.0), Req("r", 1, 2.0), Req("b2", None, 3.0)]
    p = plan(waiting, {1: 2}, max_loras=1)
    assert p.order == waiting and p.held == []


def test_every_request_is_kept_exactly_once():
    waiting = [Req(f"r{i}", (i * 7) % 5 or None, float(i)) for i in range(40)]
    p = plan(waiting, {1: 2, 3: 1}, max_loras=3, now=100.0, max_wait=50.0)
    assert sorted(names(p.order + p.held)) == sorted(names(waiting))


def test_the_adapter_being_drained_stays_the_one_drained():
    waiting = [Req("cold", 9, 90.0), Req("a", 1, 99.0), Req("b", 2, 99.1)]
    first = plan(waiting, {1: 3, 2: 4}, max_loras=2)
    assert first.draining == {1} and names(first.held) == ["a"]
    # Adapter 2 now runs fewer requests than 1, but 1 keeps draining.
    second = plan(waiting, {1: 2, 2: 1}, max_loras=2, draining=first.draining)
    assert second.draining == {1} and names(second.held) == ["a"]
