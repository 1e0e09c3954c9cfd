"""A worker runs a job end to end on the tiny model (real trainer child, local store)."""

import time

import pytest

from loraplex.adapters import open_store
from loraplex.jobs import Caller, FineTuningAPI, JobStore
from loraplex.worker.worker import Worker
from tests.jobs.conftest import chat_lines

ME = Caller("team-a")


def test_a_job_trains_publishes_and_reports(worker_settings):
    adapters = open_store(worker_settings.store)
    api = FineTuningAPI(JobStore(adapters.backend), "tiny")
    upload = api.upload(ME, "train.jsonl", "fine-tune", chat_lines(12))
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    job = api.create_job(
        ME, {"model": "tiny", "training_file": upload.id, "suffix": "pirate", "method": method}
    )
    worker = Worker(worker_settings)
    worker.admit()
    assert api.file(ME, upload.id).status == "processed"
    assert api.job(ME, job.id).status == "queued"
    started = time.monotonic()
    assert worker.work_once()
    took = time.monotonic() - started
    done = api.job(ME, job.id)
    assert done.status == "succeeded", (done.error, took)
    assert done.fine_tuned_model == f"ft:tiny:team-a:pirate:{job.id}"
    assert done.hyperparameters.batch_size == 1  # auto, resolved by the trainer
    assert done.hyperparameters.n_epochs == 2 and done.hyperparameters.learning_rate_multiplier == 1
    assert done.trained_tokens > 0 and done.finished_at and done.result_files
    manifest = adapters.resolve(done.adapter)
    assert manifest.training["job_id"] == job.id
    assert manifest.training["files"] == {upload.id: {"sha256": upload.sha256}}
    events = api.events(ME, job.id)
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(1, 25))
    assert all(e.data["train_loss"] > 0 for e in metrics)
    checkpoints = api.checkpoints(ME, job.id)
    assert [c.step_number for c in checkpoints] == [5, 10, 15, 20, 24]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-5"
    aliases = adapters.aliases(job.id)
    assert {"ckpt-step-10", "ckpt-step-15", "ckpt-step-20"} <= set(aliases)
    assert aliases["latest"] == int(done.adapter.split("@")[1])
    assert done.checkpoint_versions["20"] == f"{job.id}@{aliases['ckpt-step-20']}"
    csv = api.store.file_content(done.result_files[0]).decode().splitlines()
    assert csv[0] == "step,train_loss,learning_rate,tokens" and len(csv) == 25
    print(f"tiny job: {took:.1f} s")


def test_a_bad_file_errors_with_line_numbers_and_fails_its_job(worker_settings):
    api = FineTuningAPI(JobStore(open_store(worker_settings.store).backend), "tiny")
    bad = api.upload(
        ME, "bad.jsonl", "fine-tune", chat_lines(12, bad={3: "{not json", 7: '{"messages": []}'})
    )
    small = api.upload(ME, "small.jsonl", "fine-tune", chat_lines(4))
    job = api.create_job(ME, {"model": "tiny", "training_file": bad.id})
    few = api.create_job(ME, {"model": "tiny", "training_file": small.id})
    Worker(worker_settings).admit()
    record = api.file(ME, bad.id)
    assert record.status == "error"
    assert record.status_details.startswith("bad.jsonl:3: not JSON")
    assert "bad.jsonl:7: 'messages' must be a non-empty list" in record.status_details
    failed = api.job(ME, job.id)
    assert failed.status == "failed" and failed.error.code == "invalid_training_file"
    assert "bad.jsonl:3" in failed.error.message
    assert api.job(ME, few.id).error.code == "invalid_n_examples"


@pytest.mark.slow
def test_a_job_trains_on_two_ranks_with_torchrun(worker_settings):
    """`--nproc-per-node 2`: the trainer hands over to torchrun (gloo on CPU, one
    process per GPU on CUDA); the worker follows rank 0's metrics as for one."""
    worker_settings.nproc_per_node = 2
    adapters = open_store(worker_settings.store)
    api = FineTuningAPI(JobStore(adapters.backend), "tiny")
    upload = api.upload(ME, "train.jsonl", "fine-tune", chat_lines(12))
    one_epoch = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}
    job = api.create_job(ME, {"model": "tiny", "training_file": upload.id, "method": one_epoch})
    worker = Worker(worker_settings)
    worker.admit()
    assert worker.work_once()
    done = api.job(ME, job.id)
    assert done.status == "succeeded", done.error
    assert adapters.resolve(done.adapter).training["distributed"]["world_size"] == 2
    assert any(e.type == "metrics" for e in api.events(ME, job.id))
