"""Replicas and workers sharing one S3 store (SeaweedFS): every job runs once, and
each replica answers for the jobs the other one took, and serves their models.

Two gateways run at once on the store. Two workers (gateway A's embedded worker
and a `loraplex worker` process) race for two jobs, one created through A and
one through B. Then each job is read, listed and chatted with through the
replica that did not create it. The replicas share nothing but the store.
"""

import subprocess
import time
from collections import Counter
from pathlib import Path

import openai
import pytest

from loraplex.adapters import open_store
from loraplex.jobs import JobStore
from tests.fixtures.engine import BASE_NAME, GatewayProcess
from tests.jobs.conftest import chat_lines
from tests.serve.test_fine_tuning_api import kill, start_worker
from tests.waiting import eventually
from tests.worker.conftest import TINY_TRAINER_ARGS

pytestmark = pytest.mark.engine
JOBS = 2  # one per worker: both race for each claim, and the suite stays short
# The workers' default lease: no job is taken back from a live worker here, however
# slow the machine (the 4 s lease of the recovery test expired under load once).
LEASE_SECONDS = 30


def embedded_worker_flags() -> list[str]:
    flags = ["--embedded-worker", f"--worker-arg=--lease-seconds={LEASE_SECONDS}",
             "--worker-arg=--method=lora", "--worker-arg=--checkpoint-every=5"]  # fmt: skip
    return flags + [f"--worker-arg=--trainer-arg={a}" for a in TINY_TRAINER_ARGS]


def test_two_workers_run_each_job_once_and_either_replica_answers_for_any_job(
    tiny_model_dir: Path, s3_store_url: str, tmp_path: Path
):
    workers: list[subprocess.Popen] = []
    with (
        GatewayProcess(
            tiny_model_dir, s3_store_url, tmp_path / "a", extra_args=embedded_worker_flags()
        ) as replica_a,
        GatewayProcess(
            tiny_model_dir, s3_store_url, tmp_path / "b", extra_args=["--no-embedded-worker"]
        ) as replica_b,
    ):
        workers.append(
            start_worker(s3_store_url, tiny_model_dir, tmp_path / "worker-2", LEASE_SECONDS)
        )
        a, b = (
            openai.OpenAI(base_url=f"{r.base_url}/v1", api_key="x", max_retries=0)
            for r in (replica_a, replica_b)
        )
        upload = a.files.create(file=("train.jsonl", chat_lines(12)), purpose="fine-tune")
        upload = b.files.wait_for_processing(upload.id, poll_interval=0.2, max_wait_seconds=30)
        one_epoch = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}
        started = time.monotonic()
        created_on: dict[str, int] = {}  # job id → the replica that took it
        for i in range(JOBS):
            job = (a, b)[i % 2].fine_tuning.jobs.create(
                model=BASE_NAME, training_file=upload.id, method=one_epoch, suffix=f"s{i}"
            )
            created_on[job.id] = i % 2
        ids = list(created_on)
        eventually(
            lambda: all(b.fine_tuning.jobs.retrieve(i).status == "succeeded" for i in ids),
            600, "every job to succeed", every=1,
        )  # fmt: skip
        took = time.monotonic() - started
        for process in workers:
            kill(process)

        records = JobStore(open_store(s3_store_url).backend)
        claims = Counter()
        for job_id in ids:
            job = records.job(job_id)
            assert job.attempt == 1, job_id  # claimed once: no worker ever ran it twice
            claimed = [
                e.message for e in records.events(job_id) if "claimed by worker" in e.message
            ]
            assert len(claimed) == 1, claimed
            claims[claimed[0].rsplit(" ", 1)[1]] += 1
            # Published once: checkpoints 5 and 10, then the final adapter (a second run: 6).
            assert open_store(s3_store_url).list_versions(job_id) == [1, 2, 3]
        print(f"{JOBS} jobs in {took:.0f} s; claims by worker: {dict(claims)}")

        for job_id, creator in created_on.items():
            other = (b, a)[creator]  # the replica that did not take the job
            assert job_id in {j.id for j in other.fine_tuning.jobs.list(limit=100)}
            job = other.fine_tuning.jobs.retrieve(job_id)
            assert job.status == "succeeded"
            # /v1/models lists fine-tuned models from each replica's JobWatch, which
            # refreshes in the background: it may trail the job record it reads.
            eventually(
                lambda model=job.fine_tuned_model, replica=other: model
                in {m.id for m in replica.models.list().data},
                30, f"{job.fine_tuned_model} in the other replica's /v1/models", every=0.5,
            )  # fmt: skip
            events = other.fine_tuning.jobs.list_events(job_id, limit=100).data
            assert sum(e.type == "metrics" for e in events) == 12
            reply = other.chat.completions.with_raw_response.create(
                model=job.fine_tuned_model, messages=[{"role": "user", "content": "q1"}],
                max_tokens=4,
            )  # fmt: skip
            assert reply.headers["x-loraplex-adapter"].startswith(f"{job_id}@")
