"""Packing and the plan: whole examples per row, per-example positions and targets."""

from loraplex.trainer.packing import collate, collate_packed, pack
from loraplex.trainer.plan import plan_run
from loraplex.trainer.render import IGNORE, Example


def example(ids: list[int], trained_from: int) -> Example:
    labels = [IGNORE] * trained_from + ids[trained_from:]
    return Example(ids, labels, "x")


def test_first_fit_packs_whole_examples_within_capacity():
    lengths = [5, 3, 8, 2, 6, 1]
    rows = pack(lengths, list(range(6)), capacity=8)
    assert sorted(i for row in rows for i in row) == list(range(6))
    assert all(sum(lengths[i] for i in row) <= 8 for row in rows)
    assert rows == [[0, 1], [2], [3, 4], [5]]


def test_packed_rows_restart_positions_and_never_target_the_next_example():
    a = example([10, 11, 12, 13], trained_from=2)
    b = example([20, 21, 22], trained_from=1)
    batch = collate_packed([a, b], [[0, 1]], length=9, pad_id=0)
    assert batch.input_ids.tolist() == [[10, 11, 12, 13, 20, 21, 22, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1]]
    # Position t predicts token t+1 of the *same* example; a's last token predicts nothing.
    assert batch.targets.tolist() == [[IGNORE, 12, 13, IGNORE, 21, 22, IGNORE, IGNORE, IGNORE]]
    assert batch.attention_mask is None
    assert batch.trained_tokens == 4


def test_padded_batches_mask_the_padding():
    a, b = example([1, 2, 3], 1), example([4, 5], 1)
    batch = collate([a, b], ((0,), (1,)), packing=False, pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3], [4, 5, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.targets.tolist() == [[2, 3, IGNORE], [5, IGNORE, IGNORE]]


def test_the_plan_visits_every_example_once_per_epoch_and_is_reproducible():
    lengths = [30, 50, 20, 70, 10, 40, 60]
    settings = dict(epochs=3, batch_size=2, grad_accum=2, packing=True, max_length=100, seed=1)
    plan = plan_run(lengths, **settings)
    assert plan == plan_run(lengths, **settings)
    for epoch in range(3):
        steps = [s for s in plan if s.epoch == epoch]
        seen = [i for s in steps for mb in s.micro_batches for row in mb for i in row]
        assert sorted(seen) == list(range(7))
        assert [s.last_of_epoch for s in steps] == [False] * (len(steps) - 1) + [True]
        assert all(len(s.micro_batches) <= 2 for s in steps)
    first_rows = [s.micro_batches for s in plan if s.epoch == 0]
    second_rows = [s.micro_batches for s in plan if s.epoch == 1]
    assert first_rows != second_rows  # each epoch has its own order
