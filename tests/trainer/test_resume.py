"""Interrupted runs: nothing published, and --resume reaches the uninterrupted final state."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from loraplex.adapters.store import open_store
from loraplex.trainer.errors import ResumeError
from loraplex.trainer.train import train
from tests.trainer.conftest import make_config

# Dropout on, no packing, accumulation: every piece of state (RNG, optimizer,
# schedule, data order) matters for the final weights. 6 examples, batch 1,
# accumulation 2 → 3 steps per epoch, 60 steps.
SETTINGS = dict(
    lora={"dropout": 0.1},
    data={"packing": False},
    training={"epochs": 20, "batch_size": 1, "grad_accum": 2, "checkpoint_every": 4},
)


def settings_for(tmp_path, name: str, **output):
    store = f"file://{tmp_path / 'store'}"
    return dict(SETTINGS, output={"publish": name, "store": store, **output})


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config = make_config(tiny_model_dir, tmp / "run", **SETTINGS)
    result = train(config, tiny_model_dir, progress=False)
    assert result.record.steps == 60
    return load_file(result.adapter_dir / "adapter_model.safetensors")


def assert_same_weights(adapter_dir, expected: dict[str, torch.Tensor]) -> None:
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    assert weights.keys() == expected.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], expected[name], rtol=0, atol=1e-6)


class Crash(Exception):
    pass


def test_a_failed_run_publishes_nothing_and_resumes_to_the_same_state(
    tiny_model_dir, tmp_path, uninterrupted
):
    config = make_config(tiny_model_dir, tmp_path / "run", **settings_for(tmp_path, "bot"))

    def crash_at_step_10(state):
        if state.step == 10:
            raise Crash

    with pytest.raises(Crash):
        train(config, tiny_model_dir, progress=False, on_step=crash_at_step_10)
    assert open_store(config.output.store).list_versions("bot") == []
    assert not (tmp_path / "run" / "adapter").exists()

    result = train(config, tiny_model_dir, resume=True, progress=False)
    assert result.record.steps == 60
    assert result.manifest.ref == "bot@1"
    assert_same_weights(result.adapter_dir, uninterrupted)


@pytest.mark.slow
def test_a_killed_run_publishes_nothing_and_resumes_to_the_same_state(
    tiny_model_dir, tmp_path, uninterrupted
):
    config = make_config(tiny_model_dir, tmp_path / "run", **settings_for(tmp_path, "bot"))
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    command = [sys.executable, "-m", "loraplex.cli", "train", "-c", str(config_file)]
    process = subprocess.Popen(
        [*command, "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(checkpoints.glob("step-*"))):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "record.json").exists(), "the run finished before the kill"
    assert open_store(config.output.store).list_versions("bot") == []

    result = train(config, tiny_model_dir, resume=True, progress=False)
    assert result.manifest.ref == "bot@1"
    assert_same_weights(result.adapter_dir, uninterrupted)


def test_resume_refuses_changed_settings(tiny_model_dir, tmp_path):
    config = make_config(tiny_model_dir, tmp_path / "run", training={"epochs": 1})
    train(config, tiny_model_dir, progress=False)
    changed = make_config(
        tiny_model_dir, tmp_path / "run", training={"epochs": 1, "learning_rate": 1e-3}
    )
    with pytest.raises(ResumeError, match=r"training\.learning_rate changed"):
        train(changed, tiny_model_dir, resume=True, progress=False)


def test_resume_needs_a_started_run(tiny_model_dir, tmp_path):
    config = make_config(tiny_model_dir, tmp_path / "nothing-here")
    with pytest.raises(ResumeError, match="nothing to resume"):
        train(config, tiny_model_dir, resume=True, progress=False)
