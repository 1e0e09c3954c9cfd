"""The result of a run: a PEFT adapter directory vLLM serves, and its publication.

The adapter is saved as `adapter_config.json` + `adapter_model.safetensors`
(fp32 LoRA weights, bias none, no modules_to_save, the base model named),
then put through the store's own validation (`validate_adapter_dir`, the
same gate `publish` applies) before it is moved into place: an adapter that
vLLM would refuse or serve wrongly never leaves the trainer. The gate
checks every `lora_A` / `lora_B` tensor for its full 2-D shape against the
base: a sharded save's `[0]`-shaped tensors (peft#2450), which vLLM then
crashes on (vllm#28640), are refused here.
"""

import json
import os
import shutil
from pathlib import Path

from loraplex.adapters import validate as gate
from loraplex.adapters.errors import AdapterNotServable
from loraplex.adapters.fingerprint import read_safetensors_header
from loraplex.adapters.manifest import LoraSettings, Manifest
from loraplex.adapters.store import open_store
from loraplex.trainer.config import OutputSettings
from loraplex.trainer.errors import ExportError

SERVED_DTYPES = {"F32", "BF16"}


def export_adapter(
    model, out_dir: Path, base_model: Path, max_rank: int, weights: dict | None = None
) -> LoraSettings:
    """Write the trained LoRA to `out_dir` (all or nothing) after the export gate.

    `weights`: the whole LoRA weights by parameter name, gathered from the ranks
    (distributed.full_trainable); FSDP2's parameters hold only a shard each.
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True, state_dict=weights)
    (staging / "README.md").unlink(missing_ok=True)  # PEFT's model-card stub
    config_path = staging / gate.CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(Path(base_model).resolve())
    config["target_modules"] = sorted(config["target_modules"])  # PEFT saves a set's order
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    try:
        _check_dtypes(staging / gate.WEIGHTS_FILE)
        settings = gate.validate_adapter_dir(staging, base_model=base_model, max_rank=max_rank)
    except AdapterNotServable as exc:
        raise ExportError(f"the trained adapter would not be served by vLLM: {exc}") from None
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)
    return settings


def _check_dtypes(weights: Path) -> None:
    for name, info in read_safetensors_header(weights).items():
        if info.get("dtype") not in SERVED_DTYPES:
            raise AdapterNotServable(f"tensor {name} is {info.get('dtype')}; expected F32 or BF16")


def publish_adapter(
    adapter_dir: Path, output: OutputSettings, base_model: Path, record: dict
) -> Manifest:
    """Store the adapter as the next version of `output.publish` (AdapterError on failure)."""
    store = open_store(output.store)
    return store.publish(
        adapter_dir,
        output.publish,
        aliases=output.aliases,
        base_model=base_model,
        training=record,
        max_rank=output.max_rank,
    )
