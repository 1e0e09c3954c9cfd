"""Fine-tuned models on the gateway: `ft:` names → `name@N`, their model cards, job metrics.

Contract: a `model` starting with `ft:` is a fine-tuned model id (the rule
in loraplex/jobs/names.py). `resolve` reads the job it names (a cached
record once the job has succeeded: a finished job never changes), checks
that the whole name is that job's `fine_tuned_model` (or one of its
checkpoints), that the job succeeded, and that the caller's tenant owns it
(an admin key or a gateway without keys may use any), and answers the
immutable `name@N` the job published; anything else is the same 404 as a
missing adapter. Every replica reads the same records, so a model answers
on every replica as soon as its job has succeeded.

`JobWatch` keeps a view of every job, refreshed in the background (finished
jobs are read once), for `/v1/models` and for the Prometheus collector of
job metrics: jobs by status, `loraplex_fine_tuning_jobs_queued` (what a
KEDA ScaledObject scales workers on), queue wait, run time, trained tokens.
Every replica reports the same store-wide figures: aggregate with max().
"""

import asyncio
import logging
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from loraplex.adapters import AdapterNotFound, AdapterRef
from loraplex.jobs import JobStore, NotFound, names
from loraplex.jobs.records import JobRecord
from loraplex.serve.auth import ApiKey
from loraplex.serve.index import AdapterVersion

logger = logging.getLogger(__name__)
STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
RUN_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)


def may_use(key: ApiKey | None, job: JobRecord) -> bool:
    return key is None or key.role == "admin" or key.owner == job.tenant


class JobWatch:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.records: dict[str, JobRecord] = {}

    def refresh(self) -> None:
        """Re-read unfinished jobs and new ones; finished ones never change (blocking I/O)."""
        fresh = {}
        for job_id in self.jobs.job_ids():
            known = self.records.get(job_id)
            if known is not None and known.finished:
                fresh[job_id] = known
                continue
            try:
                fresh[job_id] = self.jobs.job(job_id)
            except NotFound:
                continue
        self.records = fresh

    def _job(self, job_id: str) -> JobRecord | None:
        known = self.records.get(job_id)
        if known is not None and known.finished:
            return known
        try:
            job = self.jobs.job(job_id)
        except NotFound:
            return None
        self.records[job_id] = job
        return job

    def resolve(self, model: str, key: ApiKey | None) -> AdapterVersion:
        """`ft:…` → the `name@N` it serves (blocking I/O on a miss); AdapterNotFound otherwise."""
        missing = AdapterNotFound(f"model '{model}' does not exist")
        parsed = names.parse_fine_tuned(model)
        job = self._job(parsed.job_id) if parsed else None
        if job is None or job.status != "succeeded" or not may_use(key, job):
            raise missing
        if parsed.step is None:
            ref = job.adapter if model == job.fine_tuned_model else None
        else:
            expected = names.checkpoint_model(job.fine_tuned_model or "", parsed.step)
            ref = job.checkpoint_versions.get(str(parsed.step)) if model == expected else None
        if ref is None:
            raise missing
        adapter = AdapterRef.parse(ref)
        return AdapterVersion(adapter.name, adapter.version)

    def models(self, key: ApiKey | None) -> list[str]:
        """The fine-tuned model ids this key may use, for `/v1/models`."""
        return sorted(
            j.fine_tuned_model
            for j in self.records.values()
            if j.status == "succeeded" and j.fine_tuned_model and may_use(key, j)
        )


async def watch_jobs(watch: JobWatch, interval: float) -> None:
    while True:
        try:
            await asyncio.to_thread(watch.refresh)
        except Exception as exc:  # the store may be down; the adapter watcher logs that
            logger.debug("job refresh failed: %s", exc)
        await asyncio.sleep(interval)


class JobMetricsCollector(Collector):
    def __init__(self, watch: JobWatch) -> None:
        self.watch = watch

    def collect(self) -> Iterable:
        jobs = list(self.watch.records.values())
        by_status = GaugeMetricFamily(
            "loraplex_fine_tuning_jobs", "Fine-tuning jobs in the store, by status.",
            labels=["status"],
        )  # fmt: skip
        for status in STATUSES:
            by_status.add_metric([status], sum(1 for j in jobs if j.status == status))
        yield by_status
        yield GaugeMetricFamily(
            "loraplex_fine_tuning_jobs_queued",
            "Fine-tuning jobs waiting for a worker (validating_files or queued): "
            "what worker autoscaling follows.",
            value=sum(1 for j in jobs if j.status in ("validating_files", "queued")),
        )
        started = [j for j in jobs if j.started_at]
        yield _histogram(
            "loraplex_fine_tuning_queue_wait_seconds",
            "Seconds from a job's creation to its first claim by a worker.",
            [j.started_at - j.created_at for j in started], WAIT_BUCKETS,
        )  # fmt: skip
        done = [j for j in started if j.status == "succeeded" and j.finished_at]
        yield _histogram(
            "loraplex_fine_tuning_run_seconds",
            "Seconds from a succeeded job's first claim to its end.",
            [j.finished_at - j.started_at for j in done], RUN_BUCKETS,
        )  # fmt: skip
        yield CounterMetricFamily(
            "loraplex_fine_tuning_trained_tokens",
            "Tokens trained by succeeded fine-tuning jobs.",
            value=sum(j.trained_tokens or 0 for j in done),
        )


def _histogram(name: str, doc: str, values: list[float], buckets: tuple) -> HistogramMetricFamily:
    cumulative = [(str(float(b)), sum(1 for v in values if v <= b)) for b in buckets]
    cumulative.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=sum(values))
