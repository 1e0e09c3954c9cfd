"""Files, jobs, events and checkpoints, kept in the adapter store's backend.

Layout, under a hidden prefix (names starting with "." never show in adapter
listings, adapters/backend.py), the same on a local directory and on S3:

    .fine-tuning/files/<file id>/content       the uploaded bytes, written first
    .fine-tuning/files/<file id>/file.json     the file object: its presence commits it
    .fine-tuning/jobs/<job id>/job.json        the job, every change a compare-and-swap
    .fine-tuning/jobs/<job id>/events/<seq>.json     exclusive create: never two with one seq
    .fine-tuning/jobs/<job id>/checkpoints/<step>.json
    .fine-tuning/jobs/<job id>/resume/…        the last checkpoint, for another worker
    .fine-tuning/<queue>/<id>                  markers: pending files, validating,
                                               queued and running jobs (queue.py)

Every change of a job is `update_job(id, change)`: read with its token,
apply `change`, `replace_if` the token still holds, retry otherwise; so two
writers (a gateway cancelling, a worker heartbeating) never lose each
other's change.
"""

from collections.abc import Callable

from loraplex.adapters.backend import Backend
from loraplex.jobs.errors import Conflict, NotFound
from loraplex.jobs.records import CheckpointRecord, EventRecord, FileRecord, JobRecord

ROOT = ".fine-tuning"
FILES = f"{ROOT}/files"
JOBS = f"{ROOT}/jobs"
CAS_ATTEMPTS = 50


class JobStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.url = backend.url
        # Events and checkpoints never change once written: each is read once per
        # process, and the next event number is remembered, not listed per write.
        self._read_once: dict[str, bytes] = {}
        self._next_seq: dict[str, int] = {}

    # -- files -----------------------------------------------------------------

    def add_file(self, record: FileRecord, content: bytes) -> FileRecord:
        self.backend.write(f"{FILES}/{record.id}/content", content)
        self.backend.create(f"{FILES}/{record.id}/file.json", record.model_dump_json().encode())
        return record

    def file(self, file_id: str) -> FileRecord:
        data = self.backend.read(f"{FILES}/{_segment(file_id)}/file.json")
        if data is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return FileRecord.model_validate_json(data)

    def file_content(self, file_id: str) -> bytes:
        data = self.backend.read(f"{FILES}/{_segment(file_id)}/content")
        if data is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return data

    def file_ids(self) -> list[str]:
        return self.backend.children(FILES)

    def files(self) -> list[FileRecord]:
        found = []
        for file_id in self.file_ids():
            try:
                found.append(self.file(file_id))
            except NotFound:  # content written, object not yet (or deleted meanwhile)
                continue
        return found

    def update_file(self, file_id: str, change: Callable[[FileRecord], FileRecord | None]):
        return self._update(
            f"{FILES}/{_segment(file_id)}/file.json", FileRecord, change, f"file {file_id}"
        )

    def delete_file(self, file_id: str) -> None:
        # The object first: once it is gone the file does not exist, whatever remains.
        self.backend.delete(f"{FILES}/{_segment(file_id)}/file.json")
        self.backend.delete_tree(f"{FILES}/{_segment(file_id)}")

    # -- jobs ------------------------------------------------------------------

    def add_job(self, job: JobRecord) -> JobRecord:
        if not self.backend.create(f"{JOBS}/{job.id}/job.json", job.model_dump_json().encode()):
            raise Conflict(f"job {job.id} exists already")
        return job

    def job(self, job_id: str) -> JobRecord:
        data = self.backend.read(f"{JOBS}/{_segment(job_id)}/job.json")
        if data is None:
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id")
        return JobRecord.model_validate_json(data)

    def job_ids(self) -> list[str]:
        return self.backend.children(JOBS)

    def jobs(self) -> list[JobRecord]:
        found = []
        for job_id in self.job_ids():
            try:
                found.append(self.job(job_id))
            except NotFound:
                continue
        return found

    def update_job(self, job_id: str, change: Callable[[JobRecord], JobRecord | None]) -> JobRecord:
        """Apply `change` (a copy in, the new record or None for "no change" out) atomically."""
        return self._update(f"{JOBS}/{_segment(job_id)}/job.json", JobRecord, change, job_id)

    def _update(self, key: str, cls, change, what: str):
        for _ in range(CAS_ATTEMPTS):
            data, token = self.backend.read_versioned(key)
            if data is None:
                raise NotFound(f"No such object: {what}")
            record = cls.model_validate_json(data)
            new = change(record.model_copy(deep=True))
            if new is None:
                return record
            if self.backend.replace_if(key, new.model_dump_json().encode(), token):
                return new
        raise Conflict(f"{what} kept changing; try again")

    # -- events and checkpoints ---------------------------------------------

    def add_event(
        self, job_id: str, message: str, *, level: str = "info", type: str = "message",
        data: dict | None = None,
    ) -> EventRecord:  # fmt: skip
        folder = f"{JOBS}/{_segment(job_id)}/events"
        seq = self._next_seq.get(job_id) or len(self.backend.children(folder)) + 1
        while True:  # a racing writer took `seq`: take the next one
            event = EventRecord(
                id=f"ftevent-{job_id.removeprefix('ftjob-')}-{seq:08d}",
                message=message, level=level, type=type, data=data,
            )  # fmt: skip
            if self.backend.create(f"{folder}/{seq:08d}.json", event.model_dump_json().encode()):
                self._next_seq[job_id] = seq + 1
                return event
            seq += 1

    def events(self, job_id: str) -> list[EventRecord]:
        """Oldest first."""
        folder = f"{JOBS}/{_segment(job_id)}/events"
        return [EventRecord.model_validate_json(d) for d in self._read_all(folder)]

    def _read_all(self, folder: str) -> list[bytes]:
        """Every object under `folder`, in key order; each read from the store once."""
        found = []
        for key in self.backend.walk(folder):
            path = f"{folder}/{key}"
            data = self._read_once.get(path)
            if data is None and (data := self.backend.read(path)) is not None:
                self._read_once[path] = data
            if data is not None:
                found.append(data)
        return found

    def add_checkpoint(self, record: CheckpointRecord) -> None:
        key = f"{JOBS}/{record.fine_tuning_job_id}/checkpoints/{record.step_number:08d}.json"
        self.backend.create(key, record.model_dump_json().encode())  # a resumed run: kept

    def checkpoints(self, job_id: str) -> list[CheckpointRecord]:
        """Oldest first."""
        folder = f"{JOBS}/{_segment(job_id)}/checkpoints"
        return [CheckpointRecord.model_validate_json(d) for d in self._read_all(folder)]


def _segment(text: str) -> str:
    """A client's id as one key segment: anything else cannot name a record."""
    if not text or "/" in text or text.startswith(".") or len(text) > 128:
        return "-invalid-"
    return text
