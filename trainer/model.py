"""The model to train: the base (4-bit NF4, bf16 or fp32) with LoRA layers on top.

- qlora: the base is quantized on load by bitsandbytes to 4-bit NF4 with
  double quantization and bf16 compute on CUDA — the numerics the server's
  4-bit base uses — and only the LoRA weights (fp32) train. On the CPU the
  compute is fp32 (base_dtype says why).
- lora: the base in bf16 on CUDA; in fp32 on CPU, where bf16 matmuls are
  slow and fp32 is what makes training and serving agree exactly.

"all-linear" is resolved here to the short names of the base's linear layers
(`q_proj`, ..., `down_proj`), never the output head: that list is what the
adapter's config records, and what vLLM matches its LoRA layers against.
"""

import json
import logging
import math
import zlib
from pathlib import Path

import torch

from loraplex.trainer.attention import NAME as PACKED_ATTENTION
from loraplex.trainer.config import LoraSettings

# Model types whose layers hand `position_ids` to the attention function.
PER_EXAMPLE_ATTENTION_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
# bitsandbytes warns on import that an optional CPU kernel package is missing;
# its own fallback works, so the warning is noise for a user.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def load_tokenizer(base_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model)


def base_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the base's unquantized weights and of QLoRA's 4-bit compute.

    bf16 on CUDA; fp32 on every CPU. Without native bf16 PyTorch emulates it
    (a 1024×576×1536 matmul: 1.6 s against 19 ms in fp32 on an AVX2 EPYC).
    With it (AMX), oneDNN keeps JIT state for every new attention shape: a
    QLoRA run's memory grew by ~12 MiB for each new example length, without
    bound over a large dataset, and SmolLM2 ran no faster than in fp32
    (bench/results/estimate.json, `qlora_cpu_compute_dtype`).
    """
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def pick_attention(base_model: Path, device: torch.device) -> str:
    """Per-example attention for packed rows on CPU, where it is known to be honoured.

    It needs the layers to hand `position_ids` to the attention function (the
    Llama family in transformers 5 does). Elsewhere, and on CUDA, transformers'
    sdpa keeps packed examples apart with its block-diagonal mask instead.
    """
    config = json.loads((Path(base_model) / "config.json").read_text())
    if device.type == "cpu" and config.get("model_type") in PER_EXAMPLE_ATTENTION_MODEL_TYPES:
        return PACKED_ATTENTION
    return "sdpa"


def uses_per_example_attention(model: torch.nn.Module) -> bool:
    """True when packed rows may be laid end to end in one sequence (no padding at all)."""
    return model.config._attn_implementation == PACKED_ATTENTION


def load_base(base_model: Path, method: str, device: torch.device, attention: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = None
    if method == "qlora":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=base_dtype(device),
        )
    return AutoModelForCausalLM.from_pretrained(
        base_model,
        dtype=base_dtype(device),
        quantization_config=quantization,
        device_map={"": device},
        attn_implementation=attention,
    )


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of every linear layer (4-bit ones included) except the output head."""
    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    return sorted(names)


def add_lora(model, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    targets = (
        linear_module_names(model) if lora.target_modules == "all-linear" else lora.target_modules
    )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(targets),
        use_rslora=lora.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_model(
    base_model: Path,
    method: str,
    lora: LoraSettings,
    device: torch.device,
    gradient_checkpointing: bool,
    attention: str | None = None,
):
    """The base model with fresh LoRA layers, ready to train (LoRA weights are fp32).

    `attention`: "sdpa" or "loraplex_packed"; by default `pick_attention`'s choice.
    """
    attention = attention or pick_attention(base_model, device)
    model = load_base(base_model, method, device, attention)
    return prepare_for_training(model, lora, gradient_checkpointing)


def prepare_for_training(model, lora: LoraSettings, gradient_checkpointing: bool):
    """A loaded base, frozen, with checkpointing if asked and fresh fp32 LoRA layers.

    Also what `loraplex estimate` runs on the CPU to time a run's steps (on a
    base with random weights), so the two cannot differ.
    """
    model.config.use_cache = False
    keep_4bit_weights_trainable(model)
    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad, so the
        # frozen embeddings stay frozen.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = add_lora(model, lora)
    for name, param in peft_model.named_parameters():
        if param.requires_grad and param.dtype != torch.float32:
            raise RuntimeError(f"LoRA weight {name} is {param.dtype}, expected float32")
    return peft_model


def lora_init_value(name: str, shape: torch.Size, seed: int) -> torch.Tensor:
    """The starting value of one LoRA weight: PEFT's default init (Kaiming-uniform
    A, zero B), drawn from a generator seeded by the run's seed and the
    weight's name, so every rank and every way of loading (whole, or shard by
    shard on the meta device) starts from the same adapter."""
    value = torch.zeros(shape, dtype=torch.float32)
    if ".lora_A." in name:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        torch.nn.init.kaiming_uniform_(value, a=math.sqrt(5), generator=generator)
    elif ".lora_B." not in name:
        raise ValueError(f"{name}: not a LoRA A or B weight")
    return value


def init_lora(model: torch.nn.Module, seed: int) -> None:
    """Give every LoRA weight its `lora_init_value` (replacing PEFT's draw from the global RNG)."""
    with torch.no_grad():
        for name, param in trainable_parameters(model).items():
            param.copy_(lora_init_value(name, param.shape, seed))


def keep_4bit_weights_trainable(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference.

    On a CPU with AVX512-BF16, a `Linear4bit` in eval mode rewrites its weight
    into an inference-only layout whose kernel has no backward: training after
    an eval pass would then backpropagate through it wrongly (PyTorch only
    warns). The training model never needs that layout.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The base's decoder layers: FSDP2's units (distributed.py)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(causal.get_decoder().layers)


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}
