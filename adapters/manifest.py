"""The manifest: what a stored adapter version is, written last to commit it."""

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field


class FileEntry(BaseModel):
    sha256: str
    size: int


class BaseModelInfo(BaseModel):
    id: str = Field(description="The base model's name (its folder or hub id).")
    fingerprint: str | None = Field(
        default=None,
        description="sha256 of the base's architecture and tensor names/shapes; "
        "None when published without a base model to check against.",
    )


class LoraSettings(BaseModel):
    r: int
    lora_alpha: float
    use_rslora: bool = False
    target_modules: list[str]


class Manifest(BaseModel):
    schema_version: int = 1
    name: str
    version: int
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    base: BaseModelInfo
    lora: LoraSettings
    files: dict[str, FileEntry]
    training: dict[str, Any] | None = None
    description: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())
