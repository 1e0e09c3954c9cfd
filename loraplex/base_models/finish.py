"""The last step of writing a model directory: stable bytes, ordinary permissions.

`save_pretrained` writes JSON in whatever key order its dicts happen to have,
and writes `model.safetensors` through a private temporary file (mode 0600),
so a model prepared by one user (a Docker build, an init container) would be
unreadable to another. Every maker ends with `finish_model_dir`.
"""

import json
import os
from pathlib import Path
from typing import Any


def finish_model_dir(out_dir: Path, tokenizer_config: dict[str, Any] | None = None) -> None:
    """Sort every JSON file's keys, merge `tokenizer_config` into tokenizer_config.json
    (None values delete keys), and make the tree readable by everyone."""
    out_dir = Path(out_dir)
    if tokenizer_config:
        path = out_dir / "tokenizer_config.json"
        config = json.loads(path.read_text())
        for key, value in tokenizer_config.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        path.write_text(json.dumps(config))
    for path in out_dir.glob("*.json"):
        path.write_text(json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True) + "\n")
    make_readable(out_dir)


def make_readable(root: Path) -> None:
    """Directories 0755 and files 0644: a base model is shared, never secret."""
    os.chmod(root, 0o755)
    for path in Path(root).rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
