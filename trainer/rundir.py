"""The run directory: one training run's config, checkpoints, logs and result.

```
<run>/config.json        the validated settings the run started with
<run>/checkpoints/step-N  resumable checkpoints (checkpoint.py)
<run>/logs/               TensorBoard event files
<run>/metrics.jsonl       one line per step (monitor.py), appended on resume
<run>/adapter/            the exported PEFT adapter (written once training finished)
<run>/record.json         the training record (also in the published manifest)
```

A new run refuses a directory that already holds one; `--resume` accepts only
a directory whose run had the same settings, except those that do not change
what is trained (where to publish, how often to checkpoint, logging).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraplex.trainer.config import TrainConfig
from loraplex.trainer.errors import ResumeError, TrainError

# Settings a resumed run may change: they do not change what is trained.
RESUMABLE_CHANGES = {
    "output.publish",
    "output.aliases",
    "output.store",
    "output.tensorboard",
    "output.dir",
    "training.checkpoint_every",
    "training.keep_checkpoints",
    "training.collective_timeout",
}


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def record(self) -> Path:
        return self.root / "record.json"

    def start(self, config: TrainConfig, resume: bool) -> None:
        """Claim the directory for a new run, or check that `resume` continues the same one."""
        if resume:
            if not self.config_file.is_file():
                raise ResumeError(f"nothing to resume in {self.root}: no run was started there")
            saved = json.loads(self.config_file.read_text())
            changed = changed_settings(saved, config.to_dict()) - RESUMABLE_CHANGES
            if changed:
                raise ResumeError(
                    f"cannot resume {self.root} with different settings: "
                    f"{', '.join(sorted(changed))} changed"
                )
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise TrainError(
                f"{self.root} already holds a run; pass --resume to continue it, "
                "or choose another --output"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted names of the settings whose values differ."""
    changed = set()
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed |= changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.add(f"{prefix}{key}")
    return changed
