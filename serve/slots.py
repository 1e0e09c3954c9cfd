"""LoRA slots sized to the load: how many adapters one batch may hold.

vLLM's `--max-loras` is how many distinct adapters a batch may mix; each
slot is a stack of LoRA weights for every layer vLLM can adapt, allocated at
start at the largest rank served. Too few slots and requests of other
adapters wait while the batch has room (issue 17: 8 slots, 16 running,
half the concurrency idle). So, unless `--max-loras` is given:

    slots = min(max_num_seqs, budget // slot_bytes)
    slot_bytes = max_rank × Σ(in + out) of the adaptable layers × dtype bytes

On the CPU, loraplex's punica wrapper also keeps a fused copy of every slot
(cpu_lora_ops/fused.py), counted in `slot_bytes` there.

`max_num_seqs` is the engine's concurrency (vLLM's default for the platform
when not given): more slots than running requests can never be used. The
budget (`--lora-slot-budget-mib`) is 2 GiB on the CPU, where a slot is cheap
host memory, and 1 GiB on a GPU, where it comes out of the KV cache.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_BUDGET_MIB = {"cpu": 2048, "gpu": 1024}
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}


@dataclass(frozen=True)
class SlotPlan:
    max_loras: int
    slot_bytes: int | None  # None: the model's shape was not known
    chosen: bool  # False: `--max-loras` was given


def adaptable_in_out(config: dict) -> int:
    """Σ(in + out) over the linear layers vLLM adapts in a Llama-style decoder
    (q, k, v, o, gate, up, down per layer); raises KeyError for other shapes."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    inter = config["intermediate_size"]
    q, k = heads * head_dim, kv * head_dim
    per_layer = (hidden + q) + 2 * (hidden + k) + (q + hidden) + 2 * (hidden + inter)
    per_layer += inter + hidden
    return per_layer * config["num_hidden_layers"]


FUSED_INNER_ALIGN = 32
"""cpu_lora_ops/packed.N_ALIGN: the fused copy's inner width is padded to it (a test ties them)."""


def fused_copy_elements(config: dict, max_rank: int) -> int:
    """Elements of the fused CPU copy of one slot (cpu_lora_ops/fused.py): per LoRA
    module, its inner width (slices × rank, padded to FUSED_INNER_ALIGN) × (in + Σ out),
    with vLLM's merged q/k/v (3 slices) and gate/up (2 slices). That is the plain
    layout's size; the AMX kernel's layout keeps B unpadded and takes less."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    inter = config["intermediate_size"]
    q, k = heads * head_dim, kv * head_dim

    def inner(slices: int) -> int:
        return -(-slices * max_rank // FUSED_INNER_ALIGN) * FUSED_INNER_ALIGN

    per_layer = inner(3) * (hidden + q + 2 * k) + inner(1) * (q + hidden)
    per_layer += inner(2) * (hidden + 2 * inter) + inner(1) * (inter + hidden)
    return per_layer * config["num_hidden_layers"]


def dtype_bytes(dtype: str, config: dict) -> int:
    if dtype == "auto":
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return _DTYPE_BYTES.get(dtype.removeprefix("torch."), 2)


def plan_slots(
    *,
    model_dir: Path,
    max_rank: int,
    dtype: str,
    max_num_seqs: int,
    budget_mib: int,
    explicit: int | None,
    fused_cpu_copy: bool = False,
) -> SlotPlan:
    try:
        config = json.loads((model_dir / "config.json").read_text())
        config = config.get("text_config", config)
        elements = max_rank * adaptable_in_out(config)
        if fused_cpu_copy:
            elements += fused_copy_elements(config, max_rank)
        per_slot = elements * dtype_bytes(dtype, config)
    except (OSError, KeyError, ValueError, TypeError):
        per_slot = None
    if explicit is not None:
        return SlotPlan(explicit, per_slot, chosen=False)
    if per_slot is None:
        logger.warning("cannot size LoRA slots for %s; using 8 (set --max-loras)", model_dir)
        return SlotPlan(min(8, max_num_seqs), None, chosen=True)
    fit = budget_mib * MIB // per_slot
    return SlotPlan(max(1, min(max_num_seqs, fit)), per_slot, chosen=True)


def describe(plan: SlotPlan, max_num_seqs: int, budget_mib: int) -> str:
    if plan.slot_bytes is None:
        size = "unknown size"
    else:
        each, total = plan.slot_bytes / MIB, plan.max_loras * plan.slot_bytes / MIB
        size = f"{each:.1f} MiB each, {total:.1f} MiB in all"
    why = (
        f"sized from max_num_seqs {max_num_seqs} and a {budget_mib} MiB budget"
        if plan.chosen
        else "from --max-loras"
    )
    return f"LoRA slots: {plan.max_loras} ({size}), {why}"
