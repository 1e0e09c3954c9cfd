"""loraplex.jobs: the files and jobs of OpenAI's fine-tuning API, kept in the adapter store.

The contract:

- Records have OpenAI's shapes (records.py: file, fine_tuning.job, its events
  and checkpoints) and live in the adapter store's own backend, local or S3,
  under the hidden prefix `.fine-tuning/` (store.py), so jobs survive gateway
  restarts and every replica and worker sees the same ones. Adapter listings
  never show them (names starting with "." are hidden).
- Every change of a job is a compare-and-swap on its record; claiming a
  queued job is one (queue.py), so two workers never run one job. A running
  job holds a lease its worker renews; an expired lease puts the job back in
  the queue (to resume from its last checkpoint) or fails it, never leaves
  it `running`.
- The operations a client asks for, with tenancy and limits, are plain
  functions over the store (service.py); the gateway (serve/) only parses
  HTTP and calls them, and the worker (loraplex/worker/) validates files and
  runs the trainer. This package imports adapters, pydantic and boto3 (via
  adapters) only: never torch, vllm, serve or the trainer.
- `ft:` model names (names.py) are fine-tuned model ids, never adapter
  references: the job record maps one to the immutable `name@N` it serves.

Modules: errors.py, names.py (ids, the `ft:` rule), records.py, store.py,
queue.py (markers, claim, leases, recovery), pages.py (list pages),
service.py (the API's operations).
"""

from loraplex.jobs.errors import Conflict, InvalidRequest, JobsError, LimitReached, NotFound
from loraplex.jobs.records import CheckpointRecord, EventRecord, FileRecord, JobRecord
from loraplex.jobs.service import Caller, FineTuningAPI, Limits
from loraplex.jobs.store import JobStore

__all__ = [
    "Caller",
    "CheckpointRecord",
    "Conflict",
    "EventRecord",
    "FileRecord",
    "FineTuningAPI",
    "InvalidRequest",
    "JobRecord",
    "JobStore",
    "JobsError",
    "LimitReached",
    "Limits",
    "NotFound",
]
