"""Validate at the door: can vLLM serve this adapter, on this base?

Each check has its own message saying what is wrong and what to do, so an
adapter that would fail in the engine (or worse, be served wrongly) never
enters the store. Validation runs on the bytes that will be stored (publish
reads the files once, then checks and stores those same bytes); the trainer's
export uses `validate_adapter_dir` on its output.

Without a base model only the structural checks run; with one, target
modules, tensor names and shapes are checked against the base's own
safetensors headers (lora_A is [r, in_features] and lora_B is
[out_features, r] of the base linear weight), so any architecture works.
"""

import json
from pathlib import Path

from pydantic import ValidationError

from loraplex.adapters.errors import AdapterNotServable
from loraplex.adapters.fingerprint import base_tensor_shapes, fingerprint_base_model
from loraplex.adapters.manifest import LoraSettings
from loraplex.adapters.safetensors_header import parse_header

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


# -- reading -------------------------------------------------------------------


def read_adapter_files(adapter_dir: Path) -> dict[str, bytes]:
    """The adapter's two files, read once; each missing file has its own message."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterNotServable(f"{adapter_dir} is not a directory")
    if not (adapter_dir / CONFIG_FILE).is_file():
        raise AdapterNotServable(f"{adapter_dir} is not a PEFT adapter: {CONFIG_FILE} is missing")
    if not (adapter_dir / WEIGHTS_FILE).is_file():
        hint = " (adapter_model.bin found: save with safe_serialization=True)" * (
            (adapter_dir / "adapter_model.bin").is_file()
        )
        raise AdapterNotServable(f"{WEIGHTS_FILE} is missing in {adapter_dir}{hint}")
    blobs = {}
    for file in ADAPTER_FILES:
        try:
            blobs[file] = (adapter_dir / file).read_bytes()
        except OSError as exc:
            raise AdapterNotServable(f"{adapter_dir / file} is unreadable: {exc}") from exc
    return blobs


def parse_config(data: bytes) -> dict:
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdapterNotServable(f"{CONFIG_FILE} is unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterNotServable(f"{CONFIG_FILE} is not a JSON object")
    return config


def lora_tensor_shapes(data: bytes) -> dict[str, list[int]]:
    try:
        header = parse_header(memoryview(data), len(data))  # no copy of the tensor bytes
    except ValueError as exc:
        raise AdapterNotServable(f"{WEIGHTS_FILE} is corrupt: {exc}") from exc
    return {name: info["shape"] for name, info in header.items()}


# -- the adapter's own config --------------------------------------------------


def check_config(config: dict, max_rank: int) -> LoraSettings:
    if config.get("peft_type") != "LORA":
        raise AdapterNotServable(
            f"not a LoRA adapter: peft_type is {config.get('peft_type')!r}; only LORA is served"
        )
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r not in VLLM_RANK_SLOTS:
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
    if "lora_alpha" not in config:
        raise AdapterNotServable(
            f"{CONFIG_FILE} has no lora_alpha, which vLLM requires; add the value it was "
            "trained with (PEFT's default is 8)"
        )
    targets = config.get("target_modules")
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise AdapterNotServable("target_modules is empty: the adapter changes nothing")
    if not isinstance(targets, list):
        raise AdapterNotServable(f"target_modules {targets!r} is not a list of module names")
    if bad := sorted(set(targets) & UNSERVABLE_MODULES):
        raise AdapterNotServable(f"LoRA on {', '.join(bad)} is not served; target linear layers")
    try:
        return LoraSettings(
            r=r,
            lora_alpha=config["lora_alpha"],
            use_rslora=config.get("use_rslora") or False,
            target_modules=sorted(targets),
        )
    except (ValidationError, TypeError) as exc:
        first = str(exc).splitlines()[1:3] if isinstance(exc, ValidationError) else [str(exc)]
        raise AdapterNotServable(
            f"{CONFIG_FILE} has an invalid value: {' '.join(s.strip() for s in first)}"
        ) from exc


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
    if not isinstance(r, int) or isinstance(r, bool):
        return "one of " + ", ".join(map(str, VLLM_RANK_SLOTS))
    lower = max((s for s in VLLM_RANK_SLOTS if s < r), default=None)
    upper = min((s for s in VLLM_RANK_SLOTS if s > r), default=None)
    return " or ".join(str(s) for s in (lower, upper) if s is not None)


# -- the tensors, alone and against the base -----------------------------------


def check_tensors(
    tensors: dict[str, list[int]],
    settings: LoraSettings,
    base_shapes: dict[str, list[int]] | None,
) -> None:
    if not tensors:
        raise AdapterNotServable(f"{WEIGHTS_FILE} holds no tensors")
    for name, shape in sorted(tensors.items()):
        module, kind = _split_lora_name(name)
        partner = name.replace(f".{kind}.", ".lora_B." if kind == "lora_A" else ".lora_A.")
        if partner not in tensors:
            raise AdapterNotServable(
                f"tensor {partner} is missing: every LoRA module needs both lora_A and lora_B"
            )
        if len(shape) != 2:
            raise AdapterNotServable(f"tensor {name} has shape {shape}; LoRA weights are 2-D")
        rank = shape[0] if kind == "lora_A" else shape[1]
        if rank != settings.r:
            raise AdapterNotServable(
                f"tensor {name} has rank {rank}, the config says r={settings.r}"
            )
        if base_shapes is not None:
            _check_against_base(name, shape, module, kind, settings.r, base_shapes)


def _check_against_base(
    name: str, shape: list[int], module: str, kind: str, r: int, base_shapes: dict
) -> None:
    base_weight = base_shapes.get(f"{module}.weight")
    if base_weight is None:
        raise AdapterNotServable(
            f"tensor {name} targets {module}, which does not exist in the base model"
        )
    if len(base_weight) != 2:
        raise AdapterNotServable(f"{module} is not a linear layer of the base model")
    out_features, in_features = base_weight
    want = [r, in_features] if kind == "lora_A" else [out_features, r]
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


def check_target_modules(config: dict, settings: LoraSettings, base_shapes: dict) -> None:
    """Every name in target_modules must be a linear layer of the base (PEFT's suffix rule)."""
    if isinstance(config.get("target_modules"), str):
        return  # a regular expression: the tensor names are checked instead
    modules = {
        n.removesuffix(".weight"): s for n, s in base_shapes.items() if n.endswith(".weight")
    }
    for target in settings.target_modules:
        found = [s for m, s in modules.items() if m == target or m.endswith(f".{target}")]
        if found and all(len(s) == 2 for s in found):
            continue
        if found:
            raise AdapterNotServable(
                f"target module {target} is not a linear layer of the base model "
                f"(its weight has shape {found[0]}); LoRA applies to linear layers"
            )
        linear = sorted({m.rsplit(".", 1)[-1] for m, s in modules.items() if len(s) == 2})
        raise AdapterNotServable(
            f"target module {target} does not exist in the base model; its linear layers are "
            + ", ".join(n for n in linear if n not in UNSERVABLE_MODULES)
        )


def check_base_model(config: dict, base_dir: Path) -> None:
    """If the adapter names a local base directory, it must be the same model."""
    named = config.get("base_model_name_or_path")
    if not isinstance(named, str) or not named or not Path(named).is_dir():
        return  # a hub id, or a path on the machine that trained it
    if Path(named).resolve() == Path(base_dir).resolve():
        return
    try:
        theirs = fingerprint_base_model(Path(named)).fingerprint
    except AdapterNotServable:
        return  # not a model folder: the tensor shapes still have to fit
    if theirs != fingerprint_base_model(base_dir).fingerprint:
        raise AdapterNotServable(
            f"the adapter was trained on {named}, which is a different model from {base_dir}"
        )


# -- entry points ---------------------------------------------------------------


def validate_adapter_files(
    blobs: dict[str, bytes], base_model: Path | None = None, max_rank: int = 16
) -> LoraSettings:
    """Check an adapter's bytes ({file: bytes}); return the settings for its manifest."""
    config = parse_config(blobs[CONFIG_FILE])
    settings = check_config(config, max_rank)
    tensors = lora_tensor_shapes(blobs[WEIGHTS_FILE])
    base_shapes = None
    if base_model is not None:
        check_base_model(config, Path(base_model))
        base_shapes = base_tensor_shapes(Path(base_model))
        check_target_modules(config, settings, base_shapes)
    check_tensors(tensors, settings, base_shapes)
    return settings


def validate_adapter_dir(
    adapter_dir: Path, base_model: Path | None = None, max_rank: int = 16
) -> LoraSettings:
    """Check everything vLLM needs; return the LoRA settings for the manifest."""
    return validate_adapter_files(read_adapter_files(adapter_dir), base_model, max_rank)
