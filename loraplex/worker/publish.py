"""What a finished run leaves: the adapter and its checkpoints in the store, the results file.

Checkpoints become servable the same way the final adapter is: each kept
checkpoint's LoRA weights are renamed to PEFT's keys (its safetensors
header rewritten, no torch) beside the final adapter's config, and
published as a version of the job's adapter with the alias
`ckpt-step-N`; the final adapter is published last, so `latest` is the
final one. The training record in each manifest names the job and the
sha256 of its files.
"""

import csv
import io
import json
import shutil
import struct
from pathlib import Path

from loraplex.adapters import Store
from loraplex.jobs import names
from loraplex.jobs.records import FileRecord, JobRecord

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def as_peft_weights(checkpoint_weights: Path, out: Path) -> None:
    """The trainer's checkpoint (`….lora_A.default.weight`) under PEFT's saved names."""
    raw = checkpoint_weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    renamed = {k.replace(".default.", "."): v for k, v in header.items()}
    encoded = json.dumps(renamed, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    out.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :])


def publish_run(
    store: Store, job: JobRecord, run: Path, checkpoints: dict[int, Path], base_model: Path,
    max_rank: int, training: dict,
) -> tuple[str, dict[str, str]]:  # fmt: skip
    """Publish the kept checkpoints, then the final adapter; (`name@N`, {step: `name@N`})."""
    published: dict[str, str] = {}
    for step, weights in sorted(checkpoints.items()):
        staging = run / f"ckpt-adapter-{step}"
        staging.mkdir(exist_ok=True)
        shutil.copy(run / "adapter" / CONFIG, staging / CONFIG)
        as_peft_weights(weights, staging / WEIGHTS)
        manifest = store.publish(
            staging, job.id, aliases=[names.checkpoint_alias(step)], base_model=base_model,
            training={**training, "checkpoint_step": step}, max_rank=max_rank,
        )  # fmt: skip
        published[str(step)] = manifest.ref
    final = store.publish(
        run / "adapter", job.id, base_model=base_model, training=training, max_rank=max_rank
    )
    return final.ref, published


def results_csv(metrics: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", "train_loss", "learning_rate", "tokens"])
    for m in metrics:
        writer.writerow([m["step"], m["train_loss"], m["learning_rate"], m["tokens"]])
    return out.getvalue().encode()


def results_file(job: JobRecord, content: bytes) -> FileRecord:
    import hashlib

    return FileRecord(
        id=names.new_id("file"), bytes=len(content), filename=f"{job.id}-results.csv",
        purpose="fine-tune-results", status="processed", tenant=job.tenant,
        sha256=hashlib.sha256(content).hexdigest(),
    )  # fmt: skip
