"""The records of the fine-tuning API: OpenAI's object shapes, plus what loraplex keeps.

Each record is one pydantic model whose public fields are exactly OpenAI's
(`public()` dumps them); the fields after them (tenant, lease, attempt, …)
are loraplex's own and never leave the store.
"""

import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

FileStatus = Literal["uploaded", "processed", "error"]
JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: set[str] = {"succeeded", "failed", "cancelled"}
Auto = Literal["auto"]


def now() -> int:
    return int(time.time())


class _Record(BaseModel):
    PUBLIC: ClassVar[tuple[str, ...]] = ()

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(self.PUBLIC))


class FileRecord(_Record):
    PUBLIC = (
        "id", "object", "bytes", "created_at", "expires_at", "filename", "purpose",
        "status", "status_details",
    )  # fmt: skip
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int = Field(default_factory=now)
    expires_at: int | None = None
    filename: str
    purpose: str
    status: FileStatus = "uploaded"
    status_details: str | None = None
    # loraplex's own
    tenant: str
    sha256: str
    examples: int | None = None  # valid records, once processed


class Hyperparameters(BaseModel):
    batch_size: Auto | int = "auto"
    learning_rate_multiplier: Auto | float = "auto"
    n_epochs: Auto | int = "auto"


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Lease(BaseModel):
    worker: str
    expires_at: float


class JobRecord(_Record):
    PUBLIC = (
        "id", "object", "created_at", "error", "fine_tuned_model", "finished_at",
        "hyperparameters", "model", "organization_id", "result_files", "seed", "status",
        "trained_tokens", "training_file", "validation_file", "integrations", "metadata",
        "method", "user_provided_suffix", "estimated_finish",
    )  # fmt: skip
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int = Field(default_factory=now)
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: JobStatus = "validating_files"
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] = Field(default_factory=dict)  # shown from hyperparameters
    user_provided_suffix: str | None = None
    estimated_finish: int | None = None
    # loraplex's own
    tenant: str
    requested: Hyperparameters | None = None  # as asked: `hyperparameters` shows them resolved
    queued_at: float | None = None
    started_at: float | None = None  # of the first attempt
    attempt: int = 0  # claims so far
    lease: Lease | None = None
    publishing: bool = False  # past the point where a cancel can stop it
    adapter: str | None = None  # the `name@N` the fine-tuned model resolves to
    checkpoint_versions: dict[str, str] = Field(default_factory=dict)  # step → name@N
    file_sha256: dict[str, str] = Field(default_factory=dict)  # file id → sha256

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def public(self) -> dict[str, Any]:
        """OpenAI's job object; `method` repeats the hyperparameters, resolved or not."""
        data = super().public()
        data["method"] = {
            "type": "supervised",
            "supervised": {"hyperparameters": data["hyperparameters"]},
        }
        return data


class EventRecord(_Record):
    PUBLIC = ("id", "object", "created_at", "level", "message", "data", "type")
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int = Field(default_factory=now)
    level: Literal["info", "warn", "error"] = "info"
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class CheckpointRecord(_Record):
    PUBLIC = (
        "id", "object", "created_at", "fine_tuned_model_checkpoint", "fine_tuning_job_id",
        "metrics", "step_number",
    )  # fmt: skip
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int = Field(default_factory=now)
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float] = Field(default_factory=dict)
    step_number: int
