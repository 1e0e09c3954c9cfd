"""Evaluations kept beside a stored version: what it scored, where, on which data.

A version's manifest is immutable, so its evaluations live next to it, one
file each, written once and never changed:

    <root>/<name>/v<N>/evaluations/<time>-<id>.json

Each is created with the backend's exclusive create (whole or not at all),
so a reader never sees half of one. Deleting the version removes them.
This module only stores and lists them; `loraplex eval` measures them.
"""

import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from loraplex.adapters.errors import IntegrityError
from loraplex.adapters.refs import AdapterRef
from loraplex.adapters.store import Store

FOLDER = "evaluations"


class MetricFigure(BaseModel):
    """One metric of one version: the value, its 95% interval, over how many examples."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0
    failed: int = 0


class AliasDecision(BaseModel):
    """A gated alias move: what was compared, and whether the alias moved."""

    alias: str
    metric: str
    margin: float
    candidate: str  # name@N
    current: str | None  # what the alias pointed at before; None if it did not exist
    candidate_value: float | None
    current_value: float | None
    moved: bool
    reason: str


class Evaluation(BaseModel):
    schema_version: int = 1
    adapter: str  # name@N
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    data_sha256: str
    data_path: str
    examples: int
    endpoint: str
    base_model: str | None = None
    quantization: str | None = None
    metrics: dict[str, MetricFigure]
    decision: AliasDecision | None = None


def _folder(name: str, version: int) -> str:
    return f"{name}/v{version}/{FOLDER}"


def save_evaluation(store: Store, evaluation: Evaluation) -> str:
    """Store `evaluation` beside its version; returns its key. The version must exist."""
    manifest = store.resolve(evaluation.adapter)
    stamp = evaluation.created_at.strftime("%Y%m%dT%H%M%S")
    key = f"{_folder(manifest.name, manifest.version)}/{stamp}-{secrets.token_hex(4)}.json"
    store.backend.create(key, evaluation.model_dump_json(indent=2).encode())
    return key


def list_evaluations(store: Store, ref: str | AdapterRef) -> list[Evaluation]:
    """Every evaluation of the version `ref` names, oldest first."""
    manifest = store.resolve(ref)
    folder = _folder(manifest.name, manifest.version)
    found = []
    for key in store.backend.walk(folder):
        data = store.backend.read(f"{folder}/{key}")
        if data is None:  # removed meanwhile
            continue
        try:
            found.append(Evaluation.model_validate_json(data))
        except ValueError as exc:
            raise IntegrityError(
                f"evaluation {store.url}/{folder}/{key} is corrupt: {str(exc).splitlines()[0]}"
            ) from exc
    return sorted(found, key=lambda e: e.created_at)
