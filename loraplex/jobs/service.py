"""The fine-tuning API's operations, for one tenant at a time: what the routes call.

Everything here is plain Python over the `JobStore`: the gateway's routes
(serve/fine_tuning.py) parse HTTP and call one function; the rules (who sees
what, limits, how a job request is read) live here and are tested without a
server. A tenant sees only its own files and jobs; anything else is
`NotFound`, exactly like a missing id. An admin (`tenant=None`) sees all.
"""

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

from loraplex.jobs import names, queue
from loraplex.jobs.errors import InvalidRequest, LimitReached, NotFound
from loraplex.jobs.records import FileRecord, Hyperparameters, JobRecord
from loraplex.jobs.store import JobStore

FINE_TUNE = "fine-tune"
RESULTS = "fine-tune-results"
REFUSED_METHODS = {
    "dpo": "DPO needs preference pairs and a reference model; loraplex trains supervised LoRA",
    "reinforcement": "reinforcement fine-tuning needs graders and sampling; loraplex trains "
    "supervised LoRA",
}
MAX_METADATA = 16


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 512 * 1024 * 1024
    max_files_per_tenant: int = 100
    max_queued_jobs_per_tenant: int = 5


@dataclass(frozen=True)
class Caller:
    tenant: str  # whose records it creates
    admin: bool = False  # sees every tenant's records

    def may_see(self, tenant: str) -> bool:
        return self.admin or tenant == self.tenant


class FineTuningAPI:
    def __init__(self, store: JobStore, base_name: str, limits: Limits = Limits()) -> None:
        self.store = store
        self.base_name = base_name
        self.limits = limits

    # -- files -----------------------------------------------------------------

    def upload(self, caller: Caller, filename: str, purpose: str, content: bytes) -> FileRecord:
        if purpose != FINE_TUNE:
            raise InvalidRequest(
                f"purpose '{purpose}' is not supported here: only '{FINE_TUNE}' files are kept",
                param="purpose",
            )
        if not filename.endswith(".jsonl"):
            raise InvalidRequest(
                f"file '{filename}' must be JSONL (a .jsonl name) for fine-tuning", param="file"
            )
        if len(content) > self.limits.max_upload_bytes:
            raise InvalidRequest(
                f"file is {len(content)} bytes; the limit is {self.limits.max_upload_bytes}",
                param="file",
            )
        mine = [f for f in self.store.files() if f.tenant == caller.tenant and f.purpose == purpose]
        if len(mine) >= self.limits.max_files_per_tenant:
            raise LimitReached(
                f"tenant '{caller.tenant}' has {len(mine)} files, the limit; delete some first",
                code="rate_limit_exceeded",
            )
        record = FileRecord(
            id=names.new_id("file"), bytes=len(content), filename=filename, purpose=purpose,
            tenant=caller.tenant, sha256=hashlib.sha256(content).hexdigest(),
        )  # fmt: skip
        queue.mark(self.store, queue.PENDING_FILES, record.id)  # a worker validates it
        return self.store.add_file(record, content)

    def file(self, caller: Caller, file_id: str) -> FileRecord:
        record = self.store.file(file_id)
        if not caller.may_see(record.tenant):
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return record

    def files(self, caller: Caller, purpose: str | None = None) -> list[FileRecord]:
        return [
            f
            for f in self.store.files()
            if caller.may_see(f.tenant) and (purpose is None or f.purpose == purpose)
        ]

    def delete_file(self, caller: Caller, file_id: str) -> dict[str, Any]:
        self.file(caller, file_id)
        self.store.delete_file(file_id)
        queue.unmark(self.store, queue.PENDING_FILES, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # -- jobs ------------------------------------------------------------------

    def create_job(self, caller: Caller, request: dict[str, Any]) -> JobRecord:
        job = self._read_request(caller, request)
        waiting = [
            j
            for j in self.store.jobs()
            if j.tenant == caller.tenant and j.status in ("validating_files", "queued")
        ]
        if len(waiting) >= self.limits.max_queued_jobs_per_tenant:
            raise LimitReached(
                f"tenant '{caller.tenant}' has {len(waiting)} jobs waiting, the limit; "
                "retry when one has started",
                code="rate_limit_exceeded",
            )
        queue.mark(self.store, queue.VALIDATING, job.id)
        self.store.add_job(job)
        self.store.add_event(job.id, f"Created fine-tuning job: {job.id}")
        self.store.add_event(job.id, "Validating training file: " + job.training_file)
        return job

    def job(self, caller: Caller, job_id: str) -> JobRecord:
        job = self.store.job(job_id)
        if not caller.may_see(job.tenant):
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id")
        return job

    def jobs(self, caller: Caller, metadata: dict[str, str] | bool | None = False):
        """`metadata`: False = no filter, None = only jobs without metadata, a dict = match."""
        found = [j for j in self.store.jobs() if caller.may_see(j.tenant)]
        if metadata is None:
            return [j for j in found if not j.metadata]
        if metadata:
            return [
                j for j in found if all((j.metadata or {}).get(k) == v for k, v in metadata.items())
            ]
        return found

    def cancel(self, caller: Caller, job_id: str) -> JobRecord:
        """An unfinished job → cancelled; a running one's worker stops its trainer within
        a heartbeat. A job already publishing its adapter finishes (the cancel came too late)."""
        self.job(caller, job_id)
        won = False

        def to_cancelled(job: JobRecord) -> JobRecord | None:
            nonlocal won
            won = False
            if job.finished or job.publishing:
                return None
            job.status, job.lease, job.finished_at = "cancelled", None, int(time.time())
            won = True
            return job

        job = self.store.update_job(job_id, to_cancelled)
        if won:
            self.store.add_event(job_id, "Job cancelled")
        elif job.status in ("succeeded", "failed"):
            raise InvalidRequest(
                f"job {job_id} has already {job.status}; only unfinished jobs can be cancelled",
                param="fine_tuning_job_id",
            )
        return job

    def events(self, caller: Caller, job_id: str):
        self.job(caller, job_id)
        return self.store.events(job_id)

    def checkpoints(self, caller: Caller, job_id: str):
        self.job(caller, job_id)
        return self.store.checkpoints(job_id)

    # -- reading a job request ------------------------------------------------------

    def _read_request(self, caller: Caller, request: dict[str, Any]) -> JobRecord:
        model = request.get("model")
        if model != self.base_name:
            raise InvalidRequest(
                f"model '{model}' cannot be fine-tuned here: this server fine-tunes its base "
                f"model '{self.base_name}'",
                param="model",
                code="model_not_available",
            )
        training = self._training_file(caller, request.get("training_file"), "training_file")
        validation = None
        if request.get("validation_file") is not None:
            validation = self._training_file(caller, request["validation_file"], "validation_file")
        if request.get("integrations"):
            raise InvalidRequest("integrations are not supported", param="integrations")
        suffix = request.get("suffix")
        if suffix is not None and (
            not isinstance(suffix, str) or not names.SUFFIX_PATTERN.fullmatch(suffix)
        ):
            raise InvalidRequest(
                "suffix must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                param="suffix",
            )
        seed = request.get("seed")
        if seed is None:
            seed = random.randrange(2**31)
        elif not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
            raise InvalidRequest("seed must be an integer from 0 to 2147483647", param="seed")
        job_id = names.new_id("ftjob")
        hyperparameters = _hyperparameters(request)
        return JobRecord(
            id=job_id,
            model=self.base_name,
            organization_id=caller.tenant,
            tenant=caller.tenant,
            training_file=training.id,
            validation_file=validation.id if validation else None,
            seed=seed,
            metadata=_metadata(request.get("metadata")),
            user_provided_suffix=suffix,
            hyperparameters=hyperparameters,
            requested=hyperparameters,
            file_sha256={f.id: f.sha256 for f in (training, validation) if f is not None},
        )

    def _training_file(self, caller: Caller, file_id: Any, param: str) -> FileRecord:
        if not isinstance(file_id, str):
            raise InvalidRequest(f"{param} must be a file id", param=param)
        try:
            record = self.file(caller, file_id)
        except NotFound:
            raise InvalidRequest(
                f"invalid {param}: no such file {file_id}", param=param, code="invalid_file_id"
            ) from None
        if record.purpose != FINE_TUNE:
            raise InvalidRequest(
                f"{param} {file_id} has purpose '{record.purpose}', not '{FINE_TUNE}'",
                param=param,
            )
        if record.status == "error":
            raise InvalidRequest(
                f"{param} {file_id} is invalid: {record.status_details}",
                param=param,
                code="invalid_training_file",
            )
        return record


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > MAX_METADATA
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
    ):
        raise InvalidRequest(
            "metadata must be at most 16 string keys (≤64 characters) with string values "
            "(≤512 characters)",
            param="metadata",
        )
    return value


def _hyperparameters(request: dict[str, Any]) -> Hyperparameters:
    """`method.supervised.hyperparameters` or the deprecated top-level `hyperparameters`."""
    method = request.get("method")
    values: Any = request.get("hyperparameters") or {}
    if method is not None:
        kind = method.get("type") if isinstance(method, dict) else None
        if kind in REFUSED_METHODS:
            raise InvalidRequest(
                f"method '{kind}' is not supported: {REFUSED_METHODS[kind]}",
                param="method.type",
            )
        if kind != "supervised":
            raise InvalidRequest(
                f"method type {kind!r} is unknown; use 'supervised'", param="method.type"
            )
        supervised = method.get("supervised") or {}
        values = (supervised.get("hyperparameters") if isinstance(supervised, dict) else None) or {}
    if not isinstance(values, dict):
        raise InvalidRequest("hyperparameters must be an object", param="hyperparameters")
    checks = {
        "n_epochs": (int, 1, 50),
        "batch_size": (int, 1, 256),
        "learning_rate_multiplier": (float, 1e-3, 10.0),
    }
    for key, value in values.items():
        if key not in checks:
            raise InvalidRequest(f"unknown hyperparameter '{key}'", param=f"hyperparameters.{key}")
        kind, low, high = checks[key]
        if value == "auto":
            continue
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if (
            not numeric
            or (kind is int and not float(value).is_integer())
            or not (low <= value <= high)
        ):
            raise InvalidRequest(
                f"{key} must be 'auto' or {'an integer' if kind is int else 'a number'} "
                f"from {low} to {high}",
                param=f"hyperparameters.{key}",
            )
    return Hyperparameters(**{k: v if v == "auto" else checks[k][0](v) for k, v in values.items()})
