"""OpenAI's fine-tuning API end to end with the official `openai` SDK, unmodified.

A gateway on the tiny model (API keys for two tenants and an admin) and a
`loraplex worker` process share a local store. One test walks the flow a
client follows: upload (a bad file ends `error` with line numbers), create a
job with `method`, poll it to `succeeded`, page through its events, list its
checkpoints, chat with `job.fine_tuned_model`; then a job cancelled mid-run
ends cancelled and publishes nothing, and a job whose worker is killed
resumes from its checkpoint on another worker.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from loraplex.adapters import open_store
from loraplex.serve.auth import hash_key
from tests.fixtures.engine import BASE_NAME, GatewayProcess
from tests.jobs.conftest import chat_lines
from tests.waiting import eventually
from tests.worker.conftest import TINY_TRAINER_ARGS

pytestmark = pytest.mark.engine
KEYS = {"key-a": ("alice", "inference", "team-a"), "key-b": ("bob", "inference", "team-b"),
        "key-admin": ("ops", "admin", None)}  # fmt: skip
LEASE_SECONDS = 4


def worker_command(
    store_url: str, base: Path, workdir: Path, lease_seconds: float = LEASE_SECONDS
) -> list[str]:
    return [
        sys.executable, "-m", "loraplex.cli", "worker", "--store", store_url,
        "--base-model", str(base), "--workdir", str(workdir), "--method", "lora",
        "--lease-seconds", str(lease_seconds), "--poll-seconds", "0.2",
        "--checkpoint-every", "5",
        *[f"--trainer-arg={a}" for a in TINY_TRAINER_ARGS],
    ]  # fmt: skip


def start_worker(
    store_url: str, base: Path, workdir: Path, lease_seconds: float = LEASE_SECONDS
) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "worker.log").open("ab")
    return subprocess.Popen(
        worker_command(store_url, base, workdir, lease_seconds),
        stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def fine_tuning(tiny_model_dir: Path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fine-tuning")
    store_url = f"file://{workdir / 'store'}"
    keys = [
        {"name": name, "sha256": hash_key(key), "role": role, "tenant": tenant}
        for key, (name, role, tenant) in KEYS.items()
    ]
    extra = ["--no-embedded-worker"]  # the test starts, kills and restarts its workers
    with GatewayProcess(
        tiny_model_dir, store_url, workdir, extra_args=extra,
        env={"LORAPLEX_API_KEYS": json.dumps(keys)},
    ) as gateway:  # fmt: skip
        workers = [start_worker(store_url, tiny_model_dir, workdir / "worker-1")]
        yield gateway, store_url, workers, workdir
        for process in workers:
            kill(process)


def sdk(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0)


def wait_status(client, job_id, statuses, within=180.0):
    return eventually(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in statuses and j,
        within, f"job {job_id} to become {statuses}", every=0.5,
    )  # fmt: skip


def test_fine_tuning_with_the_openai_sdk(fine_tuning, tiny_model_dir):
    gateway, store_url, workers, workdir = fine_tuning
    a, b, admin = sdk(gateway, "key-a"), sdk(gateway, "key-b"), sdk(gateway, "key-admin")
    timings = {}

    # A bad file ends `error`, naming its bad lines.
    bad = a.files.create(
        file=("bad.jsonl", chat_lines(12, bad={3: "{oops", 5: '{"messages": []}'})),
        purpose="fine-tune",
    )
    assert bad.status == "uploaded"
    bad = a.files.wait_for_processing(bad.id, poll_interval=0.2, max_wait_seconds=30)
    assert bad.status == "error"
    assert bad.status_details.startswith("bad.jsonl:3: not JSON")
    assert "bad.jsonl:5:" in bad.status_details
    with pytest.raises(openai.BadRequestError, match=r"bad\.jsonl:3"):
        a.fine_tuning.jobs.create(model=BASE_NAME, training_file=bad.id)
    assert a.files.delete(bad.id).deleted
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(bad.id)

    # A good file, a job, polled to the end.
    started = time.monotonic()
    upload = a.files.create(file=("train.jsonl", chat_lines(12)), purpose="fine-tune")
    upload = a.files.wait_for_processing(upload.id, poll_interval=0.2, max_wait_seconds=30)
    assert upload.status == "processed"
    timings["file processed"] = time.monotonic() - started
    assert a.files.content(upload.id).read() == chat_lines(12)
    spare = a.files.create(file=("spare.jsonl", chat_lines(12)), purpose="fine-tune")
    page = a.files.list(limit=1)
    assert [f.id for f in page.data] == [spare.id] and page.has_more
    assert [f.id for f in a.files.list(limit=1, after=spare.id).data] == [upload.id]
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    job = a.fine_tuning.jobs.create(
        model=BASE_NAME, training_file=upload.id, suffix="pirate", method=method,
        metadata={"team": "a"}, seed=7,
    )  # fmt: skip
    assert job.status == "validating_files" and job.hyperparameters.batch_size == "auto"
    job = wait_status(a, job.id, {"succeeded", "failed", "cancelled"})
    timings["job succeeded"] = time.monotonic() - started
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{BASE_NAME}:team-a:pirate:{job.id}"
    assert job.hyperparameters.batch_size == 1 and job.hyperparameters.n_epochs == 2
    assert job.method.supervised.hyperparameters.batch_size == 1
    assert job.trained_tokens > 0 and job.finished_at and job.seed == 7
    results = a.files.content(job.result_files[0]).text.splitlines()
    assert results[0].startswith("step,train_loss") and len(results) == 25

    # Events page newest first; the SDK's auto-paging walks them all.
    first = a.fine_tuning.jobs.list_events(job.id, limit=5)
    assert len(first.data) == 5 and first.has_more
    second = a.fine_tuning.jobs.list_events(job.id, limit=5, after=first.data[-1].id)
    assert second.data[0].id < first.data[-1].id
    events = list(a.fine_tuning.jobs.list_events(job.id, limit=7))
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert steps == list(range(24, 0, -1))
    assert events[0].message == "The job has successfully completed"

    checkpoints = a.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [24, 20, 15, 10, 5]
    assert all(c.fine_tuned_model_checkpoint.startswith(job.fine_tuned_model) for c in checkpoints)

    # The fine-tuned model answers at once, as an immutable name@N, and is listed.
    chat = a.chat.completions.with_raw_response.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "q1"}], max_tokens=8
    )
    assert chat.headers["x-loraplex-adapter"].startswith(f"{job.id}@")
    assert chat.parse().choices[0].message.content is not None
    ckpt = a.chat.completions.with_raw_response.create(
        model=checkpoints[2].fine_tuned_model_checkpoint,
        messages=[{"role": "user", "content": "q1"}], max_tokens=4,
    )  # fmt: skip
    assert ckpt.headers["x-loraplex-adapter"] != chat.headers["x-loraplex-adapter"]
    assert job.fine_tuned_model in {m.id for m in a.models.list().data}

    # Tenants: another tenant's key gets 404s; the admin sees everything.
    with pytest.raises(openai.NotFoundError):
        b.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(upload.id)
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "q"}], max_tokens=2
        )
    assert job.fine_tuned_model not in {m.id for m in b.models.list().data}
    assert b.fine_tuning.jobs.list().data == []
    assert admin.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert [j.id for j in a.fine_tuning.jobs.list(metadata={"team": "a"})] == [job.id]
    assert list(a.fine_tuning.jobs.list(metadata={"team": "z"})) == []

    # Refused requests: other methods, another base model.
    with pytest.raises(openai.BadRequestError, match="'dpo' is not supported"):
        a.fine_tuning.jobs.create(
            model=BASE_NAME, training_file=upload.id, method={"type": "dpo", "dpo": {}}
        )
    with pytest.raises(openai.BadRequestError, match="base model"):
        a.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload.id)

    # Cancel mid-run: the job ends cancelled within seconds and publishes nothing.
    long = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50}}}
    doomed = a.fine_tuning.jobs.create(model=BASE_NAME, training_file=upload.id, method=long)
    eventually(
        lambda: any(e.type == "metrics" for e in a.fine_tuning.jobs.list_events(doomed.id)),
        120, "the job to train", every=0.5,
    )  # fmt: skip
    # Validation never waits behind a running job: a file uploaded now is processed at once.
    during = time.monotonic()
    late = a.files.create(file=("late.jsonl", chat_lines(12)), purpose="fine-tune")
    late = a.files.wait_for_processing(late.id, poll_interval=0.2, max_wait_seconds=10)
    assert late.status == "processed"
    timings["file processed while a job trains"] = time.monotonic() - during
    assert a.fine_tuning.jobs.retrieve(doomed.id).status == "running"
    assert a.fine_tuning.jobs.cancel(doomed.id).status == "cancelled"
    cancelled_at = time.monotonic()
    log = workdir / "worker-1" / "worker.log"
    eventually(lambda: f"job {doomed.id} ended cancelled" in log.read_text(), 15, "the stop")
    timings["cancel stopped the trainer"] = time.monotonic() - cancelled_at
    time.sleep(1)
    assert a.fine_tuning.jobs.retrieve(doomed.id).status == "cancelled"
    assert doomed.id not in open_store(store_url).list_names()

    # A killed worker: its job resumes from its checkpoint on another worker.
    rescued = a.fine_tuning.jobs.create(
        model=BASE_NAME, training_file=upload.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
    )  # fmt: skip
    eventually(
        lambda: a.fine_tuning.jobs.checkpoints.list(rescued.id).data, 120, "a checkpoint",
        every=0.3,
    )  # fmt: skip
    kill(workers[0])
    killed_at = time.monotonic()
    workers.append(start_worker(store_url, tiny_model_dir, workdir / "worker-2"))
    rescued = wait_status(a, rescued.id, {"succeeded", "failed", "cancelled"})
    timings["killed worker's job succeeded"] = time.monotonic() - killed_at
    assert rescued.status == "succeeded", rescued.error
    messages = [e.message for e in a.fine_tuning.jobs.list_events(rescued.id, limit=500)]
    assert any("stopped heartbeating" in m for m in messages)
    assert any(m.startswith("Resuming from the checkpoint at step") for m in messages)
    steps = [
        e.data["step"]
        for e in a.fine_tuning.jobs.list_events(rescued.id, limit=500)
        if e.type == "metrics"
    ]
    assert max(steps) == 36 and len(set(steps)) == 36  # every step reported, none lost
    succeeded = re.compile(r'^loraplex_fine_tuning_jobs\{status="succeeded"\} 2\.0$', re.M)

    def job_metrics() -> str | None:  # the store-wide job figures, refreshed every second
        text = httpx.get(f"{gateway.base_url}/metrics").text
        return text if succeeded.search(text) else None

    metrics = eventually(job_metrics, 10, "the job metrics")
    assert re.search(r'^loraplex_fine_tuning_jobs\{status="cancelled"\} 1\.0$', metrics, re.M)
    assert "loraplex_fine_tuning_jobs_queued 0.0" in metrics
    assert re.search(r"^loraplex_fine_tuning_trained_tokens_total [1-9]", metrics, re.M)
    print({k: round(v, 1) for k, v in timings.items()})
