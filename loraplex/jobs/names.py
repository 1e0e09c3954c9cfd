"""Ids of files, jobs, events and checkpoints, and the `ft:` model-name rule.

Ids are lower-case, time-ordered and unique: `file-<16 hex time><8 hex random>`,
`ftjob-…` likewise. Sorting ids sorts by creation, so listings page by id
and a job id is also a valid adapter name (the adapter a job publishes is
named after it).

The rule for model names (README, "Fine-tuning API"): a `model` that starts
with `ft:` is always a fine-tuned model id, never an adapter reference.
Its shape is OpenAI's, `ft:{base}:{tenant}:{suffix}:{job id}`, with
`:ckpt-step-{N}` appended for a checkpoint. The job id (the last part, or
the one before `ckpt-step-N`) finds the job record, whose
`fine_tuned_model` must equal the whole name; the record names the
immutable `name@N` that answers. Adapter references (`name`, `name:alias`,
`name@N`) never start with `ft:` because the adapter name `ft` is reserved
(adapters/refs.py refuses it), so the two never collide.
"""

import re
import secrets
import time
from dataclasses import dataclass

PREFIX = "ft:"
SUFFIX_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
CHECKPOINT_PART = re.compile(r"ckpt-step-([0-9]+)")
JOB_ID = re.compile(r"ftjob-[0-9a-f]{24}")


def new_id(kind: str) -> str:
    """`kind-<time><random>`: sorts by creation time (ns), unique across processes."""
    return f"{kind}-{time.time_ns() // 1000:016x}{secrets.token_hex(4)}"


def fine_tuned_model(base: str, tenant: str, suffix: str | None, job_id: str) -> str:
    return f"{PREFIX}{base}:{tenant}:{suffix or ''}:{job_id}"


def checkpoint_model(fine_tuned: str, step: int) -> str:
    return f"{fine_tuned}:ckpt-step-{step}"


def checkpoint_alias(step: int) -> str:
    """The alias of a checkpoint's version in the job's adapter."""
    return f"ckpt-step-{step}"


@dataclass(frozen=True)
class FineTunedName:
    job_id: str
    step: int | None  # a checkpoint's step; None for the final model


def is_fine_tuned(model: str) -> bool:
    return model.startswith(PREFIX)


def parse_fine_tuned(model: str) -> FineTunedName | None:
    """The job (and checkpoint step) an `ft:` name points at; None if malformed."""
    parts = model.split(":")
    step = None
    if len(parts) >= 2 and (m := CHECKPOINT_PART.fullmatch(parts[-1])):
        step = int(m[1])
        parts = parts[:-1]
    if len(parts) < 5 or parts[0] != "ft" or not JOB_ID.fullmatch(parts[-1]):
        return None
    return FineTunedName(parts[-1], step)
