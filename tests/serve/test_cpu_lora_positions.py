"""positions.py: a batch's LoRA slots at the fused copies' first positions, moving few."""

import torch

from loraplex.serve.cpu_lora_ops.positions import Positions


def test_a_batchs_slots_take_the_first_positions_and_the_rest_stay_a_permutation():
    positions = Positions()
    layout = positions.arrange([5, 9, 1])
    assert set(layout.sources) == {1, 5, 9}
    assert layout.sources[1] == 1  # already inside 0..2: it stays
    # Every slot up to the largest used has one position, and -1 stays -1.
    mapped = layout.positions(torch.tensor([5, -1, 9, 1, 1]))
    assert mapped.tolist() == [layout.sources.index(5), -1, layout.sources.index(9), 1, 1]
    every = layout.positions(torch.arange(10))
    assert sorted(every.tolist()) == list(range(10))


def test_a_request_that_ends_and_one_that_starts_move_one_slot():
    """As requests come and go, each new slot takes a position a slot that left freed:
    the slots that stayed keep theirs."""
    positions = Positions()
    first = positions.arrange(list(range(20, 36)))
    assert sorted(first.sources) == list(range(20, 36))
    later = positions.arrange([s for s in range(20, 36) if s != 27] + [60])
    moved = [p for p in range(16) if first.sources[p] != later.sources[p]]
    assert moved == [first.sources.index(27)]
    assert later.sources[moved[0]] == 60


def test_the_same_slots_keep_the_same_layout_and_a_change_makes_a_new_one():
    """fused.py refreshes a copy only when its layout object changes."""
    positions = Positions()
    layout = positions.arrange([4, 2])
    assert positions.arrange([2, 4]) is layout
    fewer = positions.arrange([4])
    assert fewer is not layout and fewer.sources == (4,)
    assert positions.arrange([]).sources == ()
