"""Claims, leases and recovery: every job runs once, a lost worker's job comes back."""

import threading
import time

from loraplex.jobs import Caller, FineTuningAPI, JobStore, Limits, queue
from tests.jobs.conftest import chat_lines

ME = Caller("team-a")


def queued_jobs(api: FineTuningAPI, store: JobStore, count: int) -> list[str]:
    upload = api.upload(ME, "train.jsonl", "fine-tune", chat_lines(12))
    ids = []
    for _ in range(count):
        job = api.create_job(ME, {"model": "tiny", "training_file": upload.id})
        queue.enqueue(store, job.id)
        ids.append(job.id)
    return ids


def test_two_workers_racing_claim_every_job_exactly_once(job_store: JobStore):
    api = FineTuningAPI(job_store, "tiny", limits=Limits(max_queued_jobs_per_tenant=100))
    ids = queued_jobs(api, job_store, 8)
    taken: dict[str, list[str]] = {"w1": [], "w2": []}
    start = threading.Barrier(2)

    def work(name: str) -> None:
        start.wait()
        while (claimed := queue.claim(job_store, name, lease_seconds=60)) is not None:
            taken[name].append(claimed.job.id)

    threads = [threading.Thread(target=work, args=(n,)) for n in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = taken["w1"] + taken["w2"]
    assert sorted(everything) == sorted(ids)  # each once: none twice, none left
    for job_id in ids:
        job = job_store.job(job_id)
        assert job.status == "running" and job.attempt == 1
        assert job_id in taken[job.lease.worker]
    assert queue.marked(job_store, queue.QUEUED) == []


def test_expired_lease_requeues_then_fails_after_max_attempts(job_store: JobStore):
    api = FineTuningAPI(job_store, "tiny")
    queued_jobs(api, job_store, 1)
    first = queue.claim(job_store, "dead-1", lease_seconds=0.5)
    assert first is not None and not first.resumed
    assert queue.recover_expired(job_store, max_attempts=2) == []  # lease still valid
    time.sleep(0.7)
    (requeued,) = queue.recover_expired(job_store, max_attempts=2)
    assert requeued.status == "queued" and requeued.lease is None
    second = queue.claim(job_store, "dead-2", lease_seconds=0.5)
    assert second is not None and second.resumed and second.job.attempt == 2
    time.sleep(0.7)
    (failed,) = queue.recover_expired(job_store, max_attempts=2)
    assert failed.status == "failed"
    assert failed.error.code == "worker_lost"
    assert "stopped heartbeating" in failed.error.message
    assert queue.marked(job_store, queue.RUNNING) == []


def test_heartbeat_keeps_a_lease_and_tells_a_cancel(job_store: JobStore):
    api = FineTuningAPI(job_store, "tiny")
    (job_id,) = queued_jobs(api, job_store, 1)
    queue.claim(job_store, "w", lease_seconds=0.6)
    for _ in range(4):
        time.sleep(0.3)
        assert queue.owns(queue.heartbeat(job_store, job_id, "w", 0.6), "w")
        assert queue.recover_expired(job_store, max_attempts=3) == []
    api.cancel(ME, job_id)
    beat = queue.heartbeat(job_store, job_id, "w", 0.6)
    assert beat.status == "cancelled" and not queue.owns(beat, "w")


def test_a_stopping_worker_gives_its_job_back_at_once(job_store: JobStore):
    api = FineTuningAPI(job_store, "tiny")
    (job_id,) = queued_jobs(api, job_store, 1)
    queue.claim(job_store, "stopping", lease_seconds=60)
    assert queue.release(job_store, job_id, "someone-else").status == "running"
    released = queue.release(job_store, job_id, "stopping")
    assert released.status == "queued" and released.lease is None
    again = queue.claim(job_store, "next", lease_seconds=60)
    assert again.job.id == job_id and again.resumed


def test_a_late_second_enqueue_does_not_pull_a_claimed_job_back(job_store: JobStore):
    """Two workers may both validate one job's files and both enqueue it; the later
    enqueue, after the other worker claimed it, must leave the job running (seen in
    the replicas test: the job was taken back a second after its claim and ran twice)."""
    api = FineTuningAPI(job_store, "tiny")
    (job_id,) = queued_jobs(api, job_store, 1)  # the first worker's enqueue
    claimed = queue.claim(job_store, "w2", lease_seconds=60)
    assert claimed is not None and claimed.job.id == job_id
    queue.enqueue(job_store, job_id)  # the second worker's, late
    job = job_store.job(job_id)
    assert (job.status, job.attempt, queue.owns(job, "w2")) == ("running", 1, True)
    assert queue.claim(job_store, "w1", lease_seconds=60) is None
