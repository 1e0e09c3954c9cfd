"""Identify a base model by its shape, cheaply and without torch.

The fingerprint is a sha256 over the config fields that define the
architecture and the sorted tensor names and shapes from the safetensors
headers — not the values or dtypes, so the same model served in bf16, fp32
or 4-bit matches, while a different model that happens to share a name
does not.
"""

import hashlib
import json
from pathlib import Path

from loraplex.adapters.errors import AdapterNotServable
from loraplex.adapters.manifest import BaseModelInfo
from loraplex.adapters.safetensors_header import read_header

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
    return read_header(Path(path))


def base_tensor_shapes(base_dir: Path) -> dict[str, list[int]]:
    """Every tensor's shape, over all the base's safetensors files (sharded or not)."""
    if not Path(base_dir).is_dir():
        raise AdapterNotServable(f"base model {base_dir} is not a directory")
    files = _weight_files(Path(base_dir))
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


def _weight_files(base_dir: Path) -> list[Path]:
    """The shards the index names, else every *.safetensors file.

    Some repositories ship a second copy of the weights in another layout
    (Mistral's consolidated.safetensors): the index says which files the
    transformers layout uses.
    """
    index = base_dir / "model.safetensors.index.json"
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted({base_dir / shard for shard in weight_map.values()})
    except FileNotFoundError:
        return sorted(base_dir.glob("*.safetensors"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AdapterNotServable(f"base model index {index} is unreadable: {exc}") from exc


def base_config(base_dir: Path) -> dict:
    path = Path(base_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterNotServable(f"base model {path} is missing or unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterNotServable(f"base model {path} is not a JSON object")
    return config


def fingerprint_base_model(base_dir: Path) -> BaseModelInfo:
    """The base's id (its folder's name) and fingerprint, from config.json and headers only."""
    if not Path(base_dir).is_dir():
        raise AdapterNotServable(f"base model {base_dir} is not a directory")
    config = base_config(base_dir)
    identity = {
        "config": {key: config.get(key) for key in ARCHITECTURE_KEYS},
        "tensors": sorted(base_tensor_shapes(base_dir).items()),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return BaseModelInfo(id=Path(base_dir).resolve().name, fingerprint=digest)
