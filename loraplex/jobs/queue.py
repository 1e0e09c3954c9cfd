"""The queue: which files await validation, which jobs await files, a worker, or rescue.

Markers are empty objects under `.fine-tuning/<state>/<id>`; the truth is
always the record itself, markers only say where to look, so a listing is
one LIST call and never a read of every job. A marker is made *before* the
record enters its state and removed only once the record has left it for
good, so a writer that dies between the two leaves a stray marker (skipped,
then removed), never a record nobody looks at.

Claiming is a compare-and-swap of `job.json` from `queued` to `running` with
this worker's lease: of two workers racing for one job, exactly one write
succeeds. A running job's lease is renewed by heartbeats; a lease that
expires (the worker died) puts the job back in the queue to resume from its
last checkpoint, or fails it with `worker_lost` after `max_attempts` claims.
"""

import time
from dataclasses import dataclass

from loraplex.jobs.errors import NotFound
from loraplex.jobs.records import JobError, JobRecord, Lease
from loraplex.jobs.store import ROOT, JobStore

PENDING_FILES = f"{ROOT}/pending-files"
VALIDATING = f"{ROOT}/validating"
QUEUED = f"{ROOT}/queued"
RUNNING = f"{ROOT}/running"


def mark(store: JobStore, queue: str, item_id: str) -> None:
    store.backend.create(f"{queue}/{item_id}", b"")


def unmark(store: JobStore, queue: str, item_id: str) -> None:
    store.backend.delete(f"{queue}/{item_id}")


def marked(store: JobStore, queue: str) -> list[str]:
    """Ids in `queue`, oldest first (ids sort by creation)."""
    return sorted(store.backend.children(queue))


def enqueue(store: JobStore, job_id: str, message: str = "Job entered the queue") -> JobRecord:
    """validating_files → queued. Only from validating_files: two workers may both
    validate one job, and the later enqueue must not pull it back from the worker
    that claimed it meanwhile (lost running jobs are `recover_expired`'s)."""
    mark(store, QUEUED, job_id)

    def to_queued(job: JobRecord) -> JobRecord | None:
        if job.status != "validating_files":
            return None
        job.status, job.lease, job.queued_at = "queued", None, time.time()
        return job

    job = store.update_job(job_id, to_queued)
    if job.status == "queued":
        store.add_event(job_id, message)
    return job


@dataclass(frozen=True)
class Claim:
    job: JobRecord
    resumed: bool  # an earlier attempt ran it (its lease expired)


def claim(store: JobStore, worker: str, lease_seconds: float) -> Claim | None:
    """The oldest queued job, now running under `worker`'s lease; None if none is queued."""
    for job_id in marked(store, QUEUED):
        mark(store, RUNNING, job_id)  # before the job can be running without one
        won = False

        def take(job: JobRecord) -> JobRecord | None:
            nonlocal won
            won = False
            if job.status != "queued":
                return None
            job.status = "running"
            job.lease = Lease(worker=worker, expires_at=time.time() + lease_seconds)
            job.attempt += 1
            job.started_at = job.started_at or time.time()
            won = True
            return job

        try:
            job = store.update_job(job_id, take)
        except NotFound:  # a marker made before its job (or of a deleted one)
            continue
        if job.status != "validating_files":
            unmark(store, QUEUED, job_id)  # queued → running never goes back without a new marker
        if won:
            return Claim(job, resumed=job.attempt > 1)
    return None


def heartbeat(store: JobStore, job_id: str, worker: str, lease_seconds: float) -> JobRecord:
    """Renew the lease; the record returned says whether the job is still this worker's
    (`status == "running"` and `lease.worker == worker`) or was cancelled or taken back."""

    def renew(job: JobRecord) -> JobRecord | None:
        if job.status != "running" or job.lease is None or job.lease.worker != worker:
            return None
        job.lease.expires_at = time.time() + lease_seconds
        return job

    return store.update_job(job_id, renew)


def release(store: JobStore, job_id: str, worker: str) -> JobRecord:
    """A worker that stops (SIGTERM, a scale-down) gives its running job back to the
    queue at once, instead of leaving it to wait for the lease to expire."""
    mark(store, QUEUED, job_id)

    def give_back(job: JobRecord) -> JobRecord | None:
        if not owns(job, worker) or job.publishing:
            return None
        job.status, job.lease, job.queued_at = "queued", None, time.time()
        return job

    job = store.update_job(job_id, give_back)
    if job.status == "queued":
        store.add_event(
            job_id, f"Worker {worker} stopped; the job is queued again and resumes from its "
            "last checkpoint", level="warn",
        )  # fmt: skip
    return job


def owns(job: JobRecord, worker: str) -> bool:
    return job.status == "running" and job.lease is not None and job.lease.worker == worker


def recover_expired(store: JobStore, max_attempts: int) -> list[JobRecord]:
    """Running jobs whose lease expired: back to the queue, or failed. Returns them."""
    recovered = []
    for job_id in marked(store, RUNNING):
        try:
            job = store.job(job_id)
        except NotFound:
            unmark(store, RUNNING, job_id)
            continue
        if job.finished:
            unmark(store, RUNNING, job_id)
            continue
        if job.status != "running" or job.lease is None or job.lease.expires_at > time.time():
            continue
        recovered.append(_rescue(store, job, max_attempts))
    return [j for j in recovered if j is not None]


def _rescue(store: JobStore, job: JobRecord, max_attempts: int) -> JobRecord | None:
    lost = job.lease.worker
    if job.attempt < max_attempts and not job.publishing:
        mark(store, QUEUED, job.id)

        def requeue(current: JobRecord) -> JobRecord | None:
            if current.lease is None or current.lease.worker != lost or current.status != "running":
                return None  # renewed or finished meanwhile
            if current.lease.expires_at > time.time():
                return None
            current.status, current.lease, current.queued_at = "queued", None, time.time()
            return current

        new = store.update_job(job.id, requeue)
        if new.status == "queued":
            store.add_event(
                job.id,
                f"Worker {lost} stopped heartbeating; the job is queued again and resumes "
                "from its last checkpoint",
                level="warn",
            )
            return new
        return None
    error = JobError(
        code="worker_lost",
        message=f"the worker running this job stopped heartbeating ({job.attempt} attempt(s))"
        + ("" if not job.publishing else " while publishing the adapter"),
    )
    new = fail(store, job.id, error, expect_worker=lost)
    return new if new is not None and new.status == "failed" else None


def fail(
    store: JobStore, job_id: str, error: JobError, expect_worker: str | None = None
) -> JobRecord | None:
    """Any unfinished job → failed with `error` (only if still `expect_worker`'s, if given)."""

    def to_failed(job: JobRecord) -> JobRecord | None:
        if job.finished:
            return None
        if expect_worker is not None and (job.lease is None or job.lease.worker != expect_worker):
            return None
        job.status, job.error, job.lease = "failed", error, None
        job.finished_at = int(time.time())
        return job

    job = store.update_job(job_id, to_failed)
    if job.status == "failed" and job.error == error:
        store.add_event(job_id, f"Job failed: {error.message}", level="error")
        unmark(store, RUNNING, job_id)
    return job
