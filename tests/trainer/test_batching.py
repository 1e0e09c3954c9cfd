"""`batch_size: auto`: sized to the data, resolved before the plan, reported in the record."""

import logging

import pytest

from loraplex.trainer.config import TrainConfig
from loraplex.trainer.plan import ENOUGH_STEPS, FULL_BATCH, auto_batching, few_steps_advice
from loraplex.trainer.train import train
from tests.trainer.conftest import make_config

SETTINGS = dict(epochs=3, grad_accum=1, packing=True, max_length=1024, seed=0)


def test_a_small_set_is_unpacked_to_one_example_per_step():
    # 20 short chats fit in two packed rows: one or two steps an epoch. Auto gives 60.
    batching = auto_batching([60] * 20, **SETTINGS, may_unpack=True)
    assert (batching.batch_size, batching.packing, batching.steps) == (1, False, 60)


def test_a_large_set_gets_full_packed_batches():
    batching = auto_batching([100] * 20_000, **SETTINGS, may_unpack=True)
    assert (batching.batch_size, batching.packing) == (FULL_BATCH, True)
    assert batching.steps >= ENOUGH_STEPS


def test_a_middle_set_gets_the_largest_batch_that_still_gives_enough_steps():
    batching = auto_batching([100] * 100, **SETTINGS, may_unpack=True)
    assert batching == auto_batching([100] * 100, **SETTINGS, may_unpack=True)
    assert not batching.packing and batching.steps >= ENOUGH_STEPS
    # 10 packed rows an epoch: 40 epochs of 3 steps reach ENOUGH_STEPS with full batches.
    longer = auto_batching([100] * 100, **{**SETTINGS, "epochs": 40}, may_unpack=True)
    assert (longer.batch_size, longer.packing, longer.steps) == (FULL_BATCH, True, 120)
    # 30 epochs would give only 90 steps with 4 rows: 3 rows give 120.
    shorter = auto_batching([100] * 100, **{**SETTINGS, "epochs": 30}, may_unpack=True)
    assert (shorter.batch_size, shorter.packing, shorter.steps) == (3, True, 120)


def test_packing_asked_for_explicitly_is_kept():
    batching = auto_batching([40] * 20, **SETTINGS, may_unpack=False)  # one packed row
    assert (batching.batch_size, batching.packing, batching.steps) == (1, True, 3)


def test_auto_is_the_default_and_an_integer_still_works():
    data = {"train": ["x.jsonl"]}
    assert TrainConfig.model_validate({"data": data}).training.batch_size == "auto"
    config = TrainConfig.model_validate({"data": data, "training": {"batch_size": "3"}})
    assert config.training.batch_size == 3


@pytest.mark.parametrize("steps, warned", [(19, True), (20, False)])
def test_fewer_than_twenty_steps_get_advice(steps, warned):
    advice = few_steps_advice(steps)
    assert (advice is not None) == warned
    if warned:
        assert f"only {steps} optimizer steps" in advice and "--epochs" in advice


def test_a_run_reports_the_resolved_batch_and_warns_of_few_steps(tiny_model_dir, tmp_path, caplog):
    config = make_config(
        tiny_model_dir, tmp_path / "run", training={"epochs": 1, "batch_size": "auto"}
    )
    with caplog.at_level(logging.INFO, logger="loraplex.trainer"):
        record = train(config, tiny_model_dir, progress=False).record
    examples = record.train_examples
    assert record.resolved == {"training.batch_size": 1, "data.packing": False}
    assert record.config["training"]["batch_size"] == 1
    assert record.config["data"]["packing"] is False
    assert record.steps == examples  # one example per optimizer step
    assert f"only {examples} optimizer steps" in caplog.text
    assert "batch_size auto: 1 example per micro-batch (packing off" in caplog.text
