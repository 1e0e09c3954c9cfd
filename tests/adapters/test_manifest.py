"""The manifest survives JSON, the form it is stored in."""

from datetime import UTC, datetime

from loraplex.adapters import BaseModelInfo, FileEntry, LoraSettings, Manifest


def make_manifest(**overrides) -> Manifest:
    fields = dict(
        name="chat",
        version=3,
        base=BaseModelInfo(id="tiny", fingerprint="ab" * 32),
        lora=LoraSettings(r=16, lora_alpha=32, target_modules=["k_proj", "q_proj"]),
        files={
            "adapter_config.json": FileEntry(sha256="1" * 64, size=900),
            "adapter_model.safetensors": FileEntry(sha256="2" * 64, size=123_456),
        },
        training={"epochs": 3, "loss": [2.5, 1.25], "data": "chat.jsonl"},
        description="answers in French",
    )
    return Manifest(**{**fields, **overrides})


def test_manifest_round_trips_through_json():
    manifest = make_manifest()
    again = Manifest.model_validate_json(manifest.model_dump_json(indent=2))
    assert again == manifest
    assert again.created_at == manifest.created_at
    assert again.training == {"epochs": 3, "loss": [2.5, 1.25], "data": "chat.jsonl"}


def test_manifest_round_trips_without_optional_fields():
    manifest = make_manifest(training=None, description=None, base=BaseModelInfo(id="x"))
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest
    assert again.base.fingerprint is None


def test_manifest_defaults_and_derived_values():
    before = datetime.now(UTC)
    manifest = make_manifest()
    assert manifest.schema_version == 1
    assert manifest.created_at.tzinfo is not None
    assert before <= manifest.created_at <= datetime.now(UTC)
    assert manifest.ref == "chat@3"
    assert manifest.size == 900 + 123_456
    assert manifest.lora.use_rslora is False
