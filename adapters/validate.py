"""Validate at the door: can vLLM serve this adapter, on this base?

Each check has its own message saying what is wrong and what to do, so an
adapter that would fail in the engine (or worse, be served wrongly) never
enters the store. The same code gates the trainer's export.
"""

import json
from pathlib import Path

from loraplex.adapters.errors import AdapterNotServable
from loraplex.adapters.fingerprint import (
    base_tensor_shapes,
    fingerprint_base_model,
    read_safetensors_header,
)
from loraplex.adapters.manifest import LoraSettings

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
VLLM_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# vLLM applies LoRA to linear layers; LoRA on embeddings and the output head
# is not served by vLLM 0.32's LoRA model manager for most architectures.
UNSERVABLE_MODULES = {"embed_tokens", "lm_head", "wte", "wpe"}
# PEFT features vLLM 0.32 refuses at load time (vllm/lora/peft_helper.py):
# refused here instead, so they never reach a server.
UNSERVED_FEATURES = {
    "lora_bias": "LoRA bias (lora_bias=true)",
    "layer_replication": "layer_replication",
    "alora_invocation_tokens": "Activated LoRA (alora_invocation_tokens)",
    "use_qalora": "QALoRA (use_qalora=true)",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
}
# init_lora_weights strings that only set the starting weights; the others
# (pissa, olora, loftq, corda) also rewrite the base weights.
SERVED_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


def load_adapter_config(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / CONFIG_FILE
    if not Path(adapter_dir).is_dir():
        raise AdapterNotServable(f"{adapter_dir} is not a directory")
    if not path.is_file():
        raise AdapterNotServable(f"{adapter_dir} is not a PEFT adapter: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterNotServable(f"{path} is unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterNotServable(f"{path} is not a JSON object")
    return config


def check_config(config: dict, max_rank: int) -> LoraSettings:
    if config.get("peft_type") != "LORA":
        raise AdapterNotServable(
            f"not a LoRA adapter: peft_type is {config.get('peft_type')!r}; only LORA is served"
        )
    r = config.get("r")
    if not isinstance(r, int) or r not in VLLM_RANK_SLOTS:
        raise AdapterNotServable(f"rank {r} is not a vLLM rank slot; use {_nearest_slots(r)}")
    if r > max_rank:
        raise AdapterNotServable(
            f"rank {r} is above the server's maximum rank {max_rank}; "
            f"retrain with r <= {max_rank} or raise --max-lora-rank"
        )
    if config.get("use_dora"):
        raise AdapterNotServable("DoRA adapters (use_dora=true) are not served by vLLM")
    if config.get("modules_to_save"):
        raise AdapterNotServable(
            f"modules_to_save {config['modules_to_save']} is not served by vLLM: "
            "train without fully fine-tuned modules"
        )
    if config.get("bias", "none") != "none":
        raise AdapterNotServable(f"bias={config['bias']!r} is not served by vLLM; use bias='none'")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise AdapterNotServable(
                f"{key} is set: per-module ranks or alphas are not served by vLLM"
            )
    _check_features(config)
    targets = config.get("target_modules")
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise AdapterNotServable("target_modules is empty: the adapter changes nothing")
    if bad := sorted(set(targets) & UNSERVABLE_MODULES):
        raise AdapterNotServable(f"LoRA on {', '.join(bad)} is not served; target linear layers")
    return LoraSettings(
        r=r,
        lora_alpha=config.get("lora_alpha", r),
        use_rslora=bool(config.get("use_rslora", False)),
        target_modules=sorted(targets),
    )


def _check_features(config: dict) -> None:
    for key, feature in UNSERVED_FEATURES.items():
        if config.get(key):
            raise AdapterNotServable(f"{feature} is not served by vLLM")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in SERVED_INITS:
        raise AdapterNotServable(
            f"init_lora_weights={init!r} also changes the base model's weights, which vLLM "
            "does not serve; convert the adapter to a plain LoRA first"
        )


def _nearest_slots(r: object) -> str:
    if not isinstance(r, int):
        return "one of " + ", ".join(map(str, VLLM_RANK_SLOTS))
    lower = max((s for s in VLLM_RANK_SLOTS if s < r), default=None)
    upper = min((s for s in VLLM_RANK_SLOTS if s > r), default=None)
    return " or ".join(str(s) for s in (lower, upper) if s is not None)


def read_lora_tensors(adapter_dir: Path) -> dict[str, list[int]]:
    path = Path(adapter_dir) / WEIGHTS_FILE
    if not path.is_file():
        hint = " (adapter_model.bin found: save with safe_serialization=True)" * (
            (Path(adapter_dir) / "adapter_model.bin").is_file()
        )
        raise AdapterNotServable(f"{WEIGHTS_FILE} is missing in {adapter_dir}{hint}")
    try:
        header = read_safetensors_header(path)
    except (OSError, ValueError) as exc:
        raise AdapterNotServable(f"{WEIGHTS_FILE} is corrupt: {exc}") from exc
    return {name: info.get("shape", []) for name, info in header.items()}


def check_tensors(tensors: dict[str, list[int]], settings: LoraSettings, base_dir: Path | None):
    if not tensors:
        raise AdapterNotServable(f"{WEIGHTS_FILE} holds no tensors")
    base_shapes = base_tensor_shapes(base_dir) if base_dir is not None else None
    for name, shape in tensors.items():
        module, kind = _split_lora_name(name)
        if len(shape) != 2:
            raise AdapterNotServable(f"tensor {name} has shape {shape}; LoRA weights are 2-D")
        rank = shape[0] if kind == "lora_A" else shape[1]
        if rank != settings.r:
            raise AdapterNotServable(
                f"tensor {name} has rank {rank}, the config says r={settings.r}"
            )
        if base_shapes is None:
            continue
        base_weight = f"{module}.weight"
        if base_weight not in base_shapes:
            short = module.rsplit(".", 1)[-1]
            raise AdapterNotServable(
                f"target module {short} ({module}) does not exist in the base model"
            )
        out_features, in_features = base_shapes[base_weight][:2]
        want = [settings.r, in_features] if kind == "lora_A" else [out_features, settings.r]
        if shape != want:
            raise AdapterNotServable(
                f"tensor {name} has shape {shape}, but the base model needs {want}: "
                "the adapter was trained for a different base model"
            )


def _split_lora_name(name: str) -> tuple[str, str]:
    """`base_model.model.model.layers.0.q_proj.lora_A.weight`
    → (`model.layers.0.q_proj`, `lora_A`)."""
    for kind in ("lora_A", "lora_B"):
        marker = f".{kind}."
        if marker in name:
            module = name.split(marker)[0].removeprefix("base_model.model.")
            return module, kind
    raise AdapterNotServable(f"tensor {name} is not a LoRA A/B weight")


def check_base_model(config: dict, base_dir: Path) -> None:
    """If the adapter names a local base directory, it must be the same model."""
    named = config.get("base_model_name_or_path")
    if not named or not Path(named).is_dir() or Path(named).resolve() == Path(base_dir).resolve():
        return
    theirs = fingerprint_base_model(Path(named)).fingerprint
    ours = fingerprint_base_model(base_dir).fingerprint
    if theirs != ours:
        raise AdapterNotServable(
            f"the adapter was trained on {named}, which is a different model from {base_dir}"
        )


def validate_adapter_dir(
    adapter_dir: Path, base_model: Path | None = None, max_rank: int = 16
) -> LoraSettings:
    """Check everything vLLM needs; return the LoRA settings for the manifest."""
    adapter_dir = Path(adapter_dir)
    config = load_adapter_config(adapter_dir)
    settings = check_config(config, max_rank)
    tensors = read_lora_tensors(adapter_dir)
    if base_model is not None:
        check_base_model(config, Path(base_model))
    check_tensors(tensors, settings, Path(base_model) if base_model is not None else None)
    return settings
