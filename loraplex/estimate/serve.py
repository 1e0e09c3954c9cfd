"""`estimate_serving`: what vLLM will hold for `loraplex serve`'s settings, from config.json.

- weights at the serving precision (bitsandbytes NF4 for the decoder's
  linear layers by default; none = the dtype; fp8/int8 one byte; awq/gptq
  about 4.25 bits);
- LoRA slots, allocated up front: max_loras × max_lora_rank × Σ(in + out)
  over every adapted linear layer × the dtype's bytes;
- on the CPU with loraplex's ops, their fused copies of the slots
  (serve/cpu_lora_ops/fused.py), built at the first LoRA batch and so not
  taken from the KV cache: the slots again, plus the zeros of each merged
  module's block-diagonal B (q/k/v, gate/up);
- the KV cache: 2 × layers × kv_heads × head_dim × bytes per token, in
  blocks of the platform's size; its capacity in tokens, and the sequences of
  max_model_len that fit at once.
On the CPU the KV cache is what VLLM_CPU_KVCACHE_SPACE gives it; on a GPU it
is gpu_memory_utilization × memory less weights, LoRA slots, the profiling
run's activations and the CUDA context (those two are approximations).
"""

import os
from pathlib import Path

from loraplex.estimate.architecture import Architecture, describe, meta_model, read_config
from loraplex.estimate.devices import CUDA_CONTEXT, Device, GiB
from loraplex.estimate.errors import EstimateError
from loraplex.estimate.quantization import QUANTIZED_BYTES
from loraplex.estimate.results import MemoryItem, ServeEstimate

DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
CPU_BLOCK_SIZE = 128  # vLLM's CPU attention default
CPU_PROCESS = 1 * GiB  # the engine process before its KV cache (approx.)
GPU_BLOCK_SIZE = 16
# vLLM's profiling run on a GPU: one batch of max_num_batched_tokens tokens.
MAX_NUM_BATCHED_TOKENS = 8192


def total_memory() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) * 1024


def serving_dtype(dtype: str, arch_dtype: str | None) -> str:
    """vLLM's `auto`: the config's dtype, with float32 served as bfloat16."""
    if dtype != "auto":
        if dtype not in DTYPE_BYTES:
            raise EstimateError(f"unknown dtype '{dtype}' (auto, bfloat16, float16, float32)")
        return dtype
    return arch_dtype if arch_dtype in ("bfloat16", "float16") else "bfloat16"


def weight_bytes(arch: Architecture, quantization: str, size: int) -> tuple[int, str]:
    if quantization in ("none", ""):
        return arch.params * size, f"{arch.params:,} params × {size}"
    if quantization not in QUANTIZED_BYTES:
        known = ", ".join(["none", *QUANTIZED_BYTES])
        raise EstimateError(f"no estimate for quantization '{quantization}' (known: {known})")
    per = QUANTIZED_BYTES[quantization]
    total = int(arch.linear_params * per) + arch.other_params * size
    return total, f"{arch.linear_params:,} linear × {per:.3f} + {arch.other_params:,} × {size}"


def lora_slot_bytes(arch: Architecture, max_loras: int, max_rank: int, size: int) -> int:
    """max_loras × max_rank × Σ(in + out) over every linear layer of every decoder layer × bytes."""
    per_layer = sum(lin.in_features + lin.out_features for lin in arch.linears)
    return max_loras * max_rank * per_layer * arch.layers * size


# The modules vLLM merges: one LoRA module of several slices each.
MERGED_SLICES = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


FUSED_INNER_ALIGN = 32
"""serve/cpu_lora_ops/packed.N_ALIGN: the fused copy's inner width is padded to it."""


def fused_copy_bytes(arch: Architecture, max_loras: int, max_rank: int, size: int) -> int:
    """The fused CPU copies of max_loras slots (serve/cpu_lora_ops/fused.py): per LoRA
    module (vLLM merges the MERGED_SLICES), its inner width (slices × rank, padded to
    FUSED_INNER_ALIGN) × (in + Σ out): the plain layout's size, an upper bound for the AMX one's."""
    by_name = {lin.name: lin for lin in arch.linears}
    modules = [[by_name[n] for n in group if n in by_name] for group in MERGED_SLICES]
    merged = {lin.name for group in modules for lin in group}
    modules = [g for g in modules if g] + [[lin] for lin in arch.linears if lin.name not in merged]
    per_layer = 0
    for group in modules:
        inner = -(-len(group) * max_rank // FUSED_INNER_ALIGN) * FUSED_INNER_ALIGN
        per_layer += inner * (group[0].in_features + sum(lin.out_features for lin in group))
    return max_loras * per_layer * arch.layers * size


def estimate_serving(
    base_model: Path,
    *,
    quantization: str = "bitsandbytes",
    dtype: str = "auto",
    max_model_len: int | None = None,
    max_loras: int = 8,
    max_lora_rank: int = 16,
    gpu_memory_utilization: float = 0.9,
    device: Device | None = None,
    kv_cache_space_bytes: int | None = None,
    cpu_lora_ops: str = "loraplex",
) -> ServeEstimate:
    """The serving estimate; on the CPU (no `device`, or a CPU one) the KV cache is
    `kv_cache_space_bytes` (default: VLLM_CPU_KVCACHE_SPACE GiB, else 4 GiB as vLLM)."""
    hf_config = read_config(base_model)
    raw_dtype = str(getattr(hf_config, "dtype", None) or "").removeprefix("torch.") or None
    arch = describe(meta_model(hf_config))
    served = serving_dtype(dtype, raw_dtype)
    size = DTYPE_BYTES[served]
    text = hf_config.get_text_config()
    max_len = max_model_len or getattr(text, "max_position_embeddings", 2048)
    weights, how = weight_bytes(arch, quantization, size)
    slots = lora_slot_bytes(arch, max_loras, max_lora_rank, size)
    items = [
        MemoryItem(f"weights ({quantization}, {served})", weights, how),
        MemoryItem(
            "LoRA slots",
            slots,
            f"{max_loras} × rank {max_lora_rank} × Σ(in+out) × {arch.layers} layers × {size}",
        ),
    ]
    notes: list[str] = []
    per_token = arch.kv_bytes_per_token(size)
    on_gpu = device is not None and device.kind == "cuda"
    if on_gpu:
        if device.memory_bytes is None:
            raise EstimateError("give the GPU's memory (--gpu NAME or --device-memory 24GiB)")
        batched = max(MAX_NUM_BATCHED_TOKENS, max_len)
        profile = batched * (4 * arch.hidden + 2 * arch.intermediate) * size
        profile += 256 * arch.vocab * 4  # sampler logits for max_num_seqs
        items += [
            MemoryItem("activations (profiling run)", profile, f"{batched:,} tokens, approx."),
            MemoryItem("CUDA context", CUDA_CONTEXT, "approx."),
        ]
        budget = int(device.memory_bytes * gpu_memory_utilization)
        kv_bytes = budget - sum(i.bytes for i in items)
        block = GPU_BLOCK_SIZE
        notes.append(f"KV cache = {gpu_memory_utilization} × device memory − the items above")
    else:
        block = CPU_BLOCK_SIZE
        if kv_cache_space_bytes is None and os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kv_cache_space_bytes = int(os.environ["VLLM_CPU_KVCACHE_SPACE"]) * GiB
        if kv_cache_space_bytes is not None:
            kv_bytes = kv_cache_space_bytes
            notes.append(f"CPU: KV cache = VLLM_CPU_KVCACHE_SPACE ({kv_bytes / GiB:g} GiB)")
        else:  # vLLM: utilization × the NUMA node's memory, less what the process holds
            total = total_memory()
            kv_bytes = int(total * gpu_memory_utilization) - sum(i.bytes for i in items)
            kv_bytes -= CPU_PROCESS
            notes.append(
                f"CPU: KV cache ≈ {gpu_memory_utilization} × {total / GiB:.1f} GiB less weights,"
                " slots and the process (approx.; set VLLM_CPU_KVCACHE_SPACE to fix it)"
            )
    if not on_gpu and cpu_lora_ops == "loraplex":
        fused = fused_copy_bytes(arch, max_loras, max_lora_rank, size)
        how = "at most: B block-diagonal, inner width padded to 32; at the first LoRA batch"
        items.append(MemoryItem("LoRA slots' fused copies (CPU ops)", fused, how))
    kv_bytes = max(kv_bytes, 0)
    kv_tokens = kv_bytes // (per_token * block) * block
    items.append(MemoryItem("KV cache", kv_bytes, f"{per_token:,} B/token × {kv_tokens:,} tokens"))
    return ServeEstimate(
        base_model=str(base_model),
        model_type=arch.model_type,
        device=device.name if device else "cpu",
        device_memory_bytes=device.memory_bytes if device else None,
        quantization=quantization,
        dtype=served,
        max_model_len=max_len,
        max_loras=max_loras,
        max_lora_rank=max_lora_rank,
        gpu_memory_utilization=gpu_memory_utilization,
        items=items,
        kv_bytes_per_token=per_token,
        kv_cache_bytes=kv_bytes,
        kv_tokens=kv_tokens,
        concurrent_sequences=round(kv_tokens / max_len, 2),
        notes=notes,
    )
