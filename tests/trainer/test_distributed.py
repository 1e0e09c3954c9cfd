"""Training across ranks: real torchrun launches with gloo on the tiny model (CPU).

Each launch costs seconds of process start, so the cases share them: one
process (in this test process) is the reference; 2-rank DDP runs through
`loraplex train --nproc-per-node 2`; a 2-rank FSDP2 run (plain torchrun) has
its rank 1 killed, then resumes; 2-rank QLoRA with DDP publishes.

6 examples, 1 held out for eval, batch 1, no packing: a step of
two ranks has 2 micro-batches, and the last step of each epoch has 1, so
rank 1 runs a filler there (and in eval, which has one micro-batch).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from loraplex.adapters.store import open_store
from loraplex.adapters.validate import validate_adapter_dir
from loraplex.cli import app
from loraplex.trainer.checkpoint import TrainState, load_checkpoint
from loraplex.trainer.config import load_config
from loraplex.trainer.distributed import Group
from loraplex.trainer.errors import ConfigError, ResumeError
from loraplex.trainer.train import train
from tests.trainer.conftest import make_config, write_jsonl

pytestmark = pytest.mark.slow

# No clipping in the runs compared: under FSDP2 the gradient norm is summed shard
# by shard, another float order, and AdamW turns 1e-9 differences in near-zero
# gradients into differences near the learning rate (2e-3 here). The QLoRA run
# clips.
SETTINGS = dict(
    data={"packing": False, "eval_fraction": 0.16},
    training={"epochs": 3, "batch_size": 1, "grad_accum": 1, "max_grad_norm": None},
)
LAUNCH_TIMEOUT = 300


def config_file(tmp_path: Path, tiny_model_dir: Path, name: str, **settings) -> Path:
    config = make_config(tiny_model_dir, tmp_path / name, **{**SETTINGS, **settings})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def torchrun(*args, nproc: int = 2) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*command, f"--nproc-per-node={nproc}", "-m", "loraplex.cli", "train", *map(str, args)]


def run_ok(command: list[str], *, retry_on_signal: bool = False) -> subprocess.CompletedProcess:
    """Run a launch that must succeed. With `retry_on_signal`, a launch whose rank was
    killed by a signal from native code (gloo has aborted a rank with SIGABRT once in
    CI, pytorch/pytorch#188266 is one such abort) runs once more; a Python error never
    does."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    if done.returncode != 0 and retry_on_signal and killed_by_signal(done.stderr):
        report = failure_report(done)
        warnings.warn(f"a rank died by a signal; launching again:\n{report}", stacklevel=2)
        done = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, failure_report(done)
    return done


def killed_by_signal(stderr: str) -> bool:
    """True when torchrun's root cause (the first rank to fail) died by a signal."""
    _, _, root = stderr.partition("Root Cause")
    exitcode = re.search(r"exitcode\s*:\s*(-?\d+)", root)
    return exitcode is not None and int(exitcode.group(1)) < 0


def failure_report(done: subprocess.CompletedProcess) -> str:
    """What the ranks printed, with rank 0's traceback (often only "connection reset
    by peer" from the rank that failed first) cut to its last lines."""
    lines = done.stderr.splitlines()
    others = [line for line in lines if not line.startswith("[rank0]:")]
    rank0 = [line for line in lines if line.startswith("[rank0]:")][-10:]
    return "\n".join([*others[-60:], *rank0])[-6000:]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def record(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "record.json").read_text())


def assert_same_adapter(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape and a[name].dim() == 2, name
        assert (a[name] - b[name]).abs().max().item() <= atol, name


def assert_same_losses(a: dict, b: dict) -> None:
    # The record keeps 5 decimals: equal curves may round 1e-5 apart.
    assert len(a["losses"]) == len(b["losses"])
    assert max(abs(x - y) for x, y in zip(a["losses"], b["losses"], strict=True)) <= 1.0001e-5
    for x, y in zip(a["epoch_losses"], b["epoch_losses"], strict=True):
        assert abs(x["train_loss"] - y["train_loss"]) <= 1e-5
        assert abs(x["eval_loss"] - y["eval_loss"]) <= 1e-5


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory) -> Path:
    """The reference: one process, twice the accumulation, one thread as each rank has
    (torchrun's default): another thread count sums matrix products in another order."""
    tmp = tmp_path_factory.mktemp("one")
    config = make_config(tiny_model_dir, tmp / "run", **SETTINGS)
    config = config.model_copy(
        update={"training": config.training.model_copy(update={"grad_accum": 2})}
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, tiny_model_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


def test_two_ranks_ddp_train_the_adapter_of_one_process_with_twice_the_accumulation(
    tiny_model_dir, tmp_path, one_process
):
    config = config_file(tmp_path, tiny_model_dir, "run")
    shorthand = [sys.executable, "-m", "loraplex.cli", "train", "--nproc-per-node", "2"]
    done = run_ok([*shorthand, "-c", str(config), "--distributed", "ddp", "--no-progress"])
    run = tmp_path / "run"
    assert done.stdout.strip().splitlines() == [str(run / "adapter")]  # rank 0 alone prints
    assert done.stderr.count("epoch 3: train loss") == 1
    assert done.stderr.count("6 records") == 1  # the data is reported once
    assert_same_adapter(weights(run), weights(one_process))
    assert_same_losses(record(run), record(one_process))
    ranks = record(run)["distributed"]
    assert ranks["world_size"] == 2 and ranks["strategy"] == "ddp" and ranks["nodes"] == 1
    assert len(ranks["peak_memory_bytes"]) == 2 and min(ranks["peak_memory_bytes"]) > 0
    assert ranks["parameter_bytes"][0] == ranks["parameter_bytes"][1]
    assert record(run)["steps"] == record(one_process)["steps"] == 9


def test_two_ranks_qlora_ddp_publish_a_servable_adapter(tiny_model_dir, tmp_path):
    store = f"file://{tmp_path / 'store'}"
    config = config_file(
        tmp_path, tiny_model_dir, "run", method="qlora",
        training={**SETTINGS["training"], "max_grad_norm": 1.0}, output={"tensorboard": True},
    )  # fmt: skip
    done = run_ok(torchrun("-c", config, "--publish", "bot", "--store", store, "--no-progress"))
    assert done.stdout.strip().splitlines() == ["bot@1"]
    published = open_store(store)
    assert published.list_versions("bot") == [1]  # published once
    manifest = published.resolve("bot")
    assert manifest.training["distributed"]["strategy"] == "ddp"  # auto, across ranks
    assert manifest.training["distributed"]["world_size"] == 2
    validate_adapter_dir(tmp_path / "run" / "adapter", base_model=tiny_model_dir)
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name == "logs"] == ["logs"]


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=`rank`, read from /proc."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
    for pid in children.read_text().split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


def test_fsdp2_a_killed_rank_fails_the_job_and_two_ranks_resume_to_the_one_process_adapter(
    tiny_model_dir, tmp_path, one_process
):
    """FSDP2 across two ranks, killed after its first checkpoint: the job fails and
    publishes nothing; resumed on two ranks, it ends with the adapter and the loss
    curve of one process with twice the accumulation, and each rank held half the
    parameters."""
    store = f"file://{tmp_path / 'store'}"
    config = config_file(
        tmp_path, tiny_model_dir, "run",
        training={**SETTINGS["training"], "checkpoint_every": 1},
        output={"publish": "bot", "store": store},
    )  # fmt: skip
    command = torchrun("-c", config, "--distributed", "fsdp", "--no-progress")
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not (checkpoints.is_dir() and any(checkpoints.glob("step-*"))):
        assert launcher.poll() is None, launcher.stderr.read().decode()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)
    os.kill(rank_pid(launcher, 1), signal.SIGKILL)
    launcher.wait(timeout=120)  # bounded: torchrun ends the other rank, no hang
    assert launcher.returncode != 0
    assert not (tmp_path / "run" / "record.json").exists(), "the run finished before the kill"
    assert not (tmp_path / "run" / "adapter").exists()
    assert open_store(store).list_versions("bot") == []

    resume = torchrun("-c", config, "--distributed", "fsdp", "--resume", "--no-progress")
    run_ok(resume, retry_on_signal=True)
    run = tmp_path / "run"
    assert_same_adapter(weights(run), weights(one_process))
    assert_same_losses(record(run), record(one_process))
    assert open_store(store).list_versions("bot") == [1]
    ranks = record(run)["distributed"]
    assert ranks["world_size"] == 2 and ranks["strategy"] == "fsdp"
    whole = record(one_process)["distributed"]["parameter_bytes"][0]
    assert all(abs(b - whole / 2) <= 0.01 * whole for b in ranks["parameter_bytes"])


# --- no launch needed ---------------------------------------------------------------


def test_qlora_with_fsdp_is_refused_at_config_time():
    with pytest.raises(ConfigError, match=r"QLoRA with FSDP2 is refused.*distributed=ddp"):
        load_config(None, {"data.train": ["x.jsonl"], "training.distributed": "fsdp"})
    load_config(None, {"data.train": ["x.jsonl"], "training.distributed": "ddp"})


def test_a_checkpoint_resumes_only_with_the_world_size_that_wrote_it(tmp_path):
    checkpoint = tmp_path / "step-0000004"
    checkpoint.mkdir()
    (checkpoint / "state.json").write_text(json.dumps(asdict(TrainState(step=4, world_size=2))))
    with pytest.raises(ResumeError, match=r"written by 2 rank.*resume it with 2"):
        load_checkpoint(checkpoint, None, None, None, Group())


def test_bad_data_is_reported_once_before_any_rank_starts(tiny_model_dir, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json", {"messages": []}])
    args = ["--base-model", str(tiny_model_dir), "--data", str(bad), "--nproc-per-node", "2"]
    result = CliRunner().invoke(app, ["train", *args, "--output", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.output.count(f"{bad}:1: not JSON") == 1
    assert result.output.strip().splitlines()[-1].startswith("error: no valid training example")
    assert not (tmp_path / "run").exists()


def test_only_rank_0_reports_a_mistake_every_rank_makes(tiny_model_dir, tmp_path, monkeypatch):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json"])
    args = ["train", "--base-model", str(tiny_model_dir), "--data", str(bad)]
    monkeypatch.setenv("RANK", "1")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and result.output == ""
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "not JSON" in result.output


def test_each_rank_takes_every_world_th_micro_batch_and_fillers_even_them_out():
    items = ["a", "b", "c", "d", "e"]
    assert Group(rank=0, world=2).share(items) == ["a", "c", "e"]
    assert Group(rank=1, world=2).share(items) == ["b", "d", None]
    assert Group(rank=1, world=4).share(items[:2]) == ["b"]
    assert Group(rank=3, world=4).share(items[:2]) == [None]
    assert Group().share(items) == items
