"""The adapter store: references, manifests, validation, and the store itself.

Light by design (stdlib, pydantic, safetensors headers, boto3): it runs in a
CI job or an init container with no torch installed.
"""

from loraplex.adapters.errors import (
    AdapterError,
    AdapterNotFound,
    AdapterNotServable,
    AliasConflict,
    IntegrityError,
    InvalidReference,
    StoreUnavailable,
    VersionInUse,
)
from loraplex.adapters.fingerprint import fingerprint_base_model
from loraplex.adapters.manifest import BaseModelInfo, FileEntry, LoraSettings, Manifest
from loraplex.adapters.refs import AdapterRef
from loraplex.adapters.store import Store, open_store
from loraplex.adapters.validate import validate_adapter_dir

__all__ = [
    "AdapterError",
    "AdapterNotFound",
    "AdapterNotServable",
    "AdapterRef",
    "AliasConflict",
    "BaseModelInfo",
    "FileEntry",
    "IntegrityError",
    "InvalidReference",
    "LoraSettings",
    "Manifest",
    "Store",
    "StoreUnavailable",
    "VersionInUse",
    "fingerprint_base_model",
    "open_store",
    "validate_adapter_dir",
]
