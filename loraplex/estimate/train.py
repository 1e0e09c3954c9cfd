"""`estimate_training`: the peak memory of a `loraplex train` run, and with data its time."""

from pathlib import Path

from loraplex.estimate import shapes as shape_source
from loraplex.estimate import train_memory as mem
from loraplex.estimate.architecture import describe, read_config
from loraplex.estimate.devices import Device
from loraplex.estimate.lora_model import compute_dtype, lora_parameter_count, meta_lora_model
from loraplex.estimate.results import TrainEstimate
from loraplex.trainer.config import TrainConfig


def per_example_attention(model_type: str, device_kind: str) -> bool:
    """Whether the trainer lays packed rows end to end (trainer/model.py's pick_attention)."""
    from loraplex.trainer.model import PER_EXAMPLE_ATTENTION_MODEL_TYPES

    return device_kind == "cpu" and model_type in PER_EXAMPLE_ATTENTION_MODEL_TYPES


def estimate_training(
    config: TrainConfig,
    base_model: Path,
    device: Device,
    *,
    with_data: bool = False,
    with_time: bool = False,
    ranks: int = 1,
) -> TrainEstimate:
    """Peak memory per device of the run `config` describes on `device` (config.json only).

    `with_data`: tokenize and plan the real data for the micro-batch shapes.
    `with_time`: estimate the run's time too (needs `with_data`).
    `ranks`: processes of the run (`--nproc-per-node`); the peak is then one rank's,
    under `training.distributed` (auto is DDP, as the trainer chooses).
    """
    hf_config = read_config(base_model)
    method, checkpointing = config.method, config.training.gradient_checkpointing
    model = meta_lora_model(hf_config, config.lora, device.kind)
    arch = describe(model.get_base_model())
    flat = per_example_attention(arch.model_type, device.kind)
    planned = shape_source.plan_data(config, base_model) if with_data else None
    shapes = shape_source.from_data(planned, flat) if planned else shape_source.from_config(config)
    lora_params = lora_parameter_count(model)
    acts = mem.activations(model, arch, method, device.kind, shapes, checkpointing)
    state = [
        *mem.weight_items(arch, method, device.kind),
        *mem.adapter_items(lora_params, method, device.kind),
    ]
    strategy = "none"
    if ranks > 1:
        setting = config.training.distributed
        strategy = "ddp" if setting == "auto" else setting
        size = compute_dtype(device.kind).itemsize
        state = mem.shard_items(state, arch, lora_params, size, strategy, ranks)
    tensors = [*state, *mem.activation_items(acts, arch, checkpointing)]
    items = tensors + mem.runtime_items(device.kind, sum(i.bytes for i in tensors))
    estimate = TrainEstimate(
        base_model=str(config.base_model or base_model),
        model_type=arch.model_type,
        method=method,
        device=device.name,
        device_memory_bytes=device.memory_bytes,
        gradient_checkpointing=checkpointing,
        batch_size=shapes.rows,
        max_length=config.data.max_length,
        lora_r=config.lora.r,
        lora_params=lora_params,
        shapes=shapes,
        items=items,
        activation_bytes_per_token=per_token_activations(model, arch, device.kind),
        ranks=ranks,
        strategy=strategy,
    )
    if with_time and planned and shapes.run_tokens:
        from loraplex.estimate.timing import estimate_time

        estimate.time = estimate_time(planned, hf_config, arch, device, shapes, estimate.peak_bytes)
    return estimate


def per_token_activations(model, arch, device_kind: str) -> dict[str, float]:
    """Activation bytes per token of the whole decoder, with and without checkpointing."""
    from loraplex.estimate.activations import measure_layer

    layer = measure_layer(model, 1024, compute_dtype(device_kind))
    return {
        "with_checkpointing": arch.layers * layer.input_bytes / layer.tokens,
        "without_checkpointing": arch.layers * layer.per_token,
    }


def smallest_change_that_fits(
    config: TrainConfig, base_model: Path, device: Device, ranks: int = 1
) -> str | None:
    """The first of: checkpointing, a smaller batch, qlora, a shorter max length, more ranks
    with fsdp (LoRA only: FSDP2 does not take QLoRA) — that fits."""
    from loraplex.trainer.plan import FULL_BATCH

    if device.memory_bytes is None:
        return None
    t = config.training
    candidates: list[tuple[str, dict]] = []
    if not t.gradient_checkpointing:
        candidates.append(("--gradient-checkpointing", {"training.gradient_checkpointing": True}))
    size = t.batch_size if isinstance(t.batch_size, int) else FULL_BATCH
    while size > 1:
        size //= 2
        candidates.append((f"--batch-size {size}", {"training.batch_size": size}))
    if config.method == "lora":
        candidates.append(("--method qlora", {"method": "qlora"}))
    length = config.data.max_length
    while length > 256:
        length //= 2
        candidates.append((f"--max-length {length}", {"data.max_length": length}))
    for flag, change in candidates:
        changed = _with(config, change)
        if estimate_training(changed, base_model, device, ranks=ranks).fits:
            return flag
    if config.method == "lora":
        fsdp = _with(config, {"training.distributed": "fsdp"})
        for more in (2, 4, 8):
            if more > ranks and estimate_training(fsdp, base_model, device, ranks=more).fits:
                return f"--nproc-per-node {more} --distributed fsdp ({more} GPUs)"
    return None


def _with(config: TrainConfig, change: dict) -> TrainConfig:
    raw = config.to_dict()
    for dotted, value in change.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = value
    return TrainConfig.model_validate(raw)
