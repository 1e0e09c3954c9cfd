"""The worker's loops: one thread validates files and admits jobs, the main one trains.

- Validation (`admit`): uploaded files → processed/error; jobs in
  `validating_files` → queued, or failed with `invalid_training_file` /
  `invalid_n_examples`. It runs in its own thread, so a file uploaded while
  a job trains is processed in milliseconds, not after the job.
- Training (`work`): take expired leases back, claim the oldest queued job
  (a compare-and-swap: one worker per job), run it (run.py), repeat.
"""

import logging
import signal
import threading

from loraplex.adapters import Store, StoreUnavailable, open_store
from loraplex.jobs import JobStore, NotFound, queue
from loraplex.jobs.records import JobError
from loraplex.worker.run import JobRun
from loraplex.worker.settings import WorkerSettings
from loraplex.worker.validate import validate_file

log = logging.getLogger("loraplex.worker")


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.adapters: Store = open_store(settings.store)
        self.jobs = JobStore(self.adapters.backend)
        self.stopping = threading.Event()

    def serve_forever(self) -> None:
        log.info("worker %s on %s", self.settings.worker_id, self.jobs.url)
        admitting = threading.Thread(target=self._admit_forever, daemon=True, name="admit")
        admitting.start()
        while not self.stopping.is_set():
            try:
                worked = self.work_once()
            except StoreUnavailable as exc:  # keep trying: the store comes back
                log.warning("the store did not answer: %s", exc)
                worked = False
            if not worked:
                self.stopping.wait(self.settings.poll_seconds)

    def _admit_forever(self) -> None:
        while not self.stopping.is_set():
            try:
                self.admit()
            except Exception:  # a store hiccup must not end validation
                log.exception("validating files failed; retrying")
            self.stopping.wait(min(self.settings.poll_seconds, 0.5))

    def admit(self) -> None:
        for file_id in queue.marked(self.jobs, queue.PENDING_FILES):
            validate_file(self.jobs, file_id)
        for job_id in queue.marked(self.jobs, queue.VALIDATING):
            self.admit_job(job_id)

    def admit_job(self, job_id: str) -> None:
        try:
            job = self.jobs.job(job_id)
        except NotFound:
            return  # its marker was made first; the record follows
        if job.status != "validating_files":
            queue.unmark(self.jobs, queue.VALIDATING, job_id)
            return
        for file_id in filter(None, (job.training_file, job.validation_file)):
            record = validate_file(self.jobs, file_id)
            if record is None or record.status == "error":
                details = record.status_details if record else "the file was deleted"
                queue.fail(
                    self.jobs, job_id,
                    JobError(code="invalid_training_file", message=f"{file_id}: {details}",
                             param="training_file"),
                )  # fmt: skip
                break
            if file_id == job.training_file and (record.examples or 0) < self.settings.min_examples:
                queue.fail(
                    self.jobs, job_id,
                    JobError(code="invalid_n_examples", param="training_file",
                             message=f"training file has {record.examples} examples; "
                             f"at least {self.settings.min_examples} are required"),
                )  # fmt: skip
                break
        else:
            self.jobs.add_event(job_id, "Files validated, moving job to queued state")
            queue.enqueue(self.jobs, job_id)
        queue.unmark(self.jobs, queue.VALIDATING, job_id)

    def work_once(self) -> bool:
        """Recover expired leases, then claim and run one job; False if none was queued."""
        for job in queue.recover_expired(self.jobs, self.settings.max_attempts):
            log.warning("job %s: lease expired, now %s", job.id, job.status)
        claimed = queue.claim(self.jobs, self.settings.worker_id, self.settings.lease_seconds)
        if claimed is None:
            return False
        job = claimed.job
        log.info("job %s claimed (attempt %d)", job.id, job.attempt)
        self.jobs.add_event(job.id, f"Fine-tuning job claimed by worker {self.settings.worker_id}")
        try:
            done = JobRun(self.jobs, self.adapters, self.settings, job).execute()
        except KeyboardInterrupt:  # SIGTERM or ^C: the trainer is stopped; give the job back
            queue.release(self.jobs, job.id, self.settings.worker_id)
            raise
        except Exception as exc:  # a worker bug or a store outage: the job fails, loudly
            log.exception("job %s failed in the worker", job.id)
            done = queue.fail(
                self.jobs, job.id,
                JobError(code="worker_error", message=f"{type(exc).__name__}: {exc}"),
                expect_worker=self.settings.worker_id,
            )  # fmt: skip
        log.info("job %s ended %s", job.id, done.status if done else "?")
        return True


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_worker(settings: WorkerSettings, once: bool = False) -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # a pod stopping: stop the trainer, release
    worker = Worker(settings)
    if once:  # tests and scripts: admit what is there, run what is queued, return
        worker.admit()
        while worker.work_once():
            worker.admit()
        return
    try:
        worker.serve_forever()
    except KeyboardInterrupt:
        worker.stopping.set()
