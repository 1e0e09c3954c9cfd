"""Identify a base model by its shape, cheaply and without torch.

The fingerprint is a sha256 over the config fields that define the
architecture and the sorted tensor names and shapes from the safetensors
headers — not the values or dtypes, so the same model served in bf16, fp32
or 4-bit matches, while a different model that happens to share a name
does not.
"""

import hashlib
import json
import struct
from pathlib import Path

from loraplex.adapters.errors import AdapterNotServable
from loraplex.adapters.manifest import BaseModelInfo

ARCHITECTURE_KEYS = (
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "tie_word_embeddings",
)


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name → {"dtype", "shape", ...}; raises ValueError on a corrupt file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file is shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise ValueError(f"header length {length} is not plausible")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    return header


def base_tensor_shapes(base_dir: Path) -> dict[str, list[int]]:
    files = sorted(Path(base_dir).glob("*.safetensors"))
    if not files:
        raise AdapterNotServable(f"base model {base_dir} has no .safetensors weights")
    shapes: dict[str, list[int]] = {}
    for path in files:
        try:
            header = read_safetensors_header(path)
        except (OSError, ValueError) as exc:
            raise AdapterNotServable(f"base model weights {path} are unreadable: {exc}") from exc
        shapes.update({name: info["shape"] for name, info in header.items()})
    return shapes


def base_config(base_dir: Path) -> dict:
    path = Path(base_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterNotServable(f"{path} is missing or unreadable: {exc}") from exc


def fingerprint_base_model(base_dir: Path) -> BaseModelInfo:
    config = base_config(base_dir)
    identity = {
        "config": {key: config.get(key) for key in ARCHITECTURE_KEYS},
        "tensors": sorted(base_tensor_shapes(base_dir).items()),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return BaseModelInfo(id=Path(base_dir).resolve().name, fingerprint=digest)
