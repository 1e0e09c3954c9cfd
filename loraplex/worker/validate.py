"""Validating an uploaded file with the trainer's own record checks.

The gateway only stores an upload (`status: uploaded`); a worker reads it
with `trainer.data.read_data_file`, the very check a training run makes,
and moves it to `processed`, or to `error` with `status_details` naming the
first bad lines as `file:line: reason`. No tokenizer, no torch: validation
takes milliseconds and never waits behind a training run.
"""

import tempfile
from pathlib import Path

from loraplex.jobs import JobStore, NotFound, queue
from loraplex.jobs.records import FileRecord
from loraplex.trainer.data import read_data_file
from loraplex.trainer.errors import DataError

SHOWN_PROBLEMS = 5


def check_content(filename: str, content: bytes) -> tuple[int, str | None]:
    """(valid examples, None) or (valid examples, the first problems as `file:line: reason`)."""
    with tempfile.TemporaryDirectory(prefix="loraplex-validate-") as tmp:
        path = Path(tmp) / Path(filename).name
        path.write_bytes(content)
        try:
            data = read_data_file(path)
        except DataError as exc:
            return 0, str(exc).replace(str(path), path.name)
    problems = [f"{path.name}:{p.source.rpartition(':')[2]}: {p.reason}" for p in data.problems]
    if problems:
        more = len(problems) - SHOWN_PROBLEMS
        shown = "; ".join(problems[:SHOWN_PROBLEMS])
        return len(data.conversations), shown + (f"; and {more} more bad lines" if more > 0 else "")
    if not data.conversations:
        return 0, f"{path.name}: no records"
    return len(data.conversations), None


def validate_file(store: JobStore, file_id: str) -> FileRecord | None:
    """Validate one uploaded file and record the verdict; None if it is gone."""
    try:
        record = store.file(file_id)
        content = store.file_content(file_id) if record.status == "uploaded" else b""
    except NotFound:
        return None
    if record.status == "uploaded":
        examples, details = check_content(record.filename, content)

        def verdict(current: FileRecord) -> FileRecord | None:
            if current.status != "uploaded":
                return None
            current.status = "error" if details else "processed"
            current.status_details, current.examples = details, examples
            return current

        try:
            record = store.update_file(file_id, verdict)
        except NotFound:
            return None
    queue.unmark(store, queue.PENDING_FILES, file_id)
    return record
