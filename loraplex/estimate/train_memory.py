"""Peak memory of a training run, item by item: weights, adapter state, activations, head, runtime.

The peak of a LoRA step is at one of two moments, and the larger counts:
- the end of the forward pass, when every layer's saved activations (or, with
  gradient checkpointing, every layer's input) are held and the output head
  computes the loss one chunk of trained tokens at a time (trainer/loss.py);
- the backward pass of the last layer, when (with checkpointing) that layer's
  activations are recomputed and its gradients are being formed.
Adapter parameters, their gradients and the optimizer's states (AdamW fp32,
or bitsandbytes' paged 8-bit AdamW for QLoRA on CUDA) are held throughout
from the second step on.

Across ranks (trainer/distributed.py) each rank runs micro-batches of the
same size, so activations are per rank what they are for one process. DDP
keeps the whole base and adapter state on every rank, plus its gradient
buckets (a flat copy of the LoRA gradients it all-reduces). FSDP2 shards
every parameter (one unit per decoder layer, one root unit for embeddings,
norm and head): a rank holds 1/N of the weights and adapter state, plus the
units all-gathered whole while they compute — the root unit (kept whole
from forward to backward) and two layers (the one computing and the next,
prefetched).
"""

from dataclasses import dataclass

from loraplex.estimate.activations import measure_layer
from loraplex.estimate.architecture import Architecture
from loraplex.estimate.devices import CUDA_CONTEXT, MiB
from loraplex.estimate.lora_model import compute_dtype
from loraplex.estimate.quantization import NF4_BYTES_PER_PARAM
from loraplex.estimate.results import MemoryItem, Shapes
from loraplex.trainer.loss import LOGITS_CHUNK, PLAIN_HEAD_MODEL_TYPES

# PyTorch's caching allocator rounds and keeps freed blocks: the reserved
# memory runs this much above the live peak on LoRA runs.
ALLOCATOR_MARGIN = 0.05
# The CPU process before its first tensor: Python, torch, transformers, PEFT,
# tokenizers and bitsandbytes, resident. Measured with bench/bench_estimate.py
# on this project's CPU machine (RSS of the trainer's process at load).
CPU_RUNTIME = 512 * MiB


@dataclass(frozen=True)
class Activations:
    per_layer_saved: int  # bytes one layer saves for backward (this micro-batch)
    per_layer_input: int  # bytes of one layer's input (what checkpointing keeps)
    forward_end: int  # held at the end of the forward pass, head chunk included
    backward: int  # held during the last layer's backward
    head: int


def weight_items(arch: Architecture, method: str, device_kind: str) -> list[MemoryItem]:
    # What is not quantized stays at the compute dtype: bf16 on CUDA, fp32 on
    # the CPU (trainer/model.py's base_dtype).
    size = compute_dtype(device_kind).itemsize
    name = "bf16" if size == 2 else "fp32"
    if method == "qlora":
        return [
            MemoryItem(
                "base weights, NF4 (decoder linear layers)",
                int(arch.linear_params * NF4_BYTES_PER_PARAM),
                f"{arch.linear_params:,} params × 4 bits + double-quantized absmax",
            ),
            MemoryItem(
                f"base weights, {name} (embeddings, norms, head)",
                arch.other_params * size,
                f"{arch.other_params:,} params × {size} bytes",
            ),
        ]
    return [MemoryItem(f"base weights, {name}", arch.params * size, f"{arch.params:,} × {size}")]


def adapter_items(lora_params: int, method: str, device_kind: str) -> list[MemoryItem]:
    items = [
        MemoryItem("LoRA parameters (fp32)", lora_params * 4, f"{lora_params:,} × 4"),
        MemoryItem("LoRA gradients (fp32)", lora_params * 4, f"{lora_params:,} × 4"),
    ]
    if method == "qlora" and device_kind == "cuda":
        states = MemoryItem(
            "optimizer: paged 8-bit AdamW", lora_params * 2, "2 states × 1 byte (pageable)"
        )
    else:
        states = MemoryItem("optimizer: AdamW (fp32)", lora_params * 8, "2 states × 4 bytes")
    return [*items, states]


def head_bytes(arch: Architecture, shapes: Shapes, act_size: int) -> int:
    """The output head's working memory while the loss is computed (trainer/loss.py)."""
    hidden = shapes.trained_tokens * arch.hidden * act_size
    if arch.model_type in PLAIN_HEAD_MODEL_TYPES:
        chunk = min(LOGITS_CHUNK, shapes.trained_tokens)
        # logits at the compute dtype, their fp32 copy (the same tensor when
        # fp32), and logsumexp's fp32 temporary; plus the trained tokens'
        # gathered hidden states and their gradient, kept for backward.
        logits = chunk * arch.vocab * (act_size + 4 + 4 if act_size != 4 else 8)
        return logits + 2 * hidden
    # Full logits for every position, then the trained ones in fp32 with
    # cross-entropy's log-softmax kept for backward.
    return shapes.tokens * arch.vocab * act_size + shapes.trained_tokens * arch.vocab * 12


def activations(
    peft_model,
    arch: Architecture,
    method: str,
    device_kind: str,
    shapes: Shapes,
    checkpointing: bool,
) -> Activations:
    dtype = compute_dtype(device_kind)
    act = dtype.itemsize
    layer = measure_layer(peft_model, shapes.tokens, dtype)
    # The decoder's final norm and last hidden state, kept for the head's backward.
    tail = 3 * shapes.tokens * arch.hidden * act
    head = head_bytes(arch, shapes, act)
    if checkpointing:
        held = arch.layers * layer.input_bytes
        recomputed = layer.saved_bytes
    else:
        held = arch.layers * layer.saved_bytes
        recomputed = 0
    # Gradients in flight inside a layer's backward: its output's gradient and
    # the MLP's intermediate ones; QLoRA also dequantizes the largest weight.
    working = 2 * shapes.tokens * (arch.intermediate + arch.hidden) * act
    if method == "qlora":
        working += max(lin.in_features * lin.out_features for lin in arch.linears) * 2
    grad_hidden = shapes.trained_tokens * arch.hidden * act
    return Activations(
        per_layer_saved=layer.saved_bytes,
        per_layer_input=layer.input_bytes,
        forward_end=held + tail + head,
        backward=held + recomputed + working + grad_hidden + tail,
        head=head,
    )


def activation_items(a: Activations, arch: Architecture, checkpointing: bool) -> list[MemoryItem]:
    kept = a.per_layer_input if checkpointing else a.per_layer_saved
    what = "layer inputs (checkpointing)" if checkpointing else "saved activations"
    held = arch.layers * kept
    items = [MemoryItem(f"activations: {what}", held, f"{arch.layers} layers × {kept:,} B")]
    if a.forward_end >= a.backward:
        items.append(
            MemoryItem("output head: loss chunk + hidden", a.forward_end - held, "end of forward")
        )
    else:
        items.append(
            MemoryItem(
                "backward: recompute + gradients" if checkpointing else "backward: gradients",
                a.backward - held,
                "last layer's backward",
            )
        )
    return items


def runtime_items(device_kind: str, subtotal: int) -> list[MemoryItem]:
    if device_kind == "cuda":
        return [
            MemoryItem("CUDA context", CUDA_CONTEXT, "driver, cuBLAS workspace"),
            MemoryItem(
                "allocator margin",
                int(subtotal * ALLOCATOR_MARGIN),
                f"{ALLOCATOR_MARGIN:.0%} of tensors (caching allocator)",
            ),
        ]
    return [MemoryItem("process runtime (CPU)", CPU_RUNTIME, "Python + libraries, measured")]


def shard_items(
    items: list[MemoryItem],
    arch: Architecture,
    lora_params: int,
    size: int,
    strategy: str,
    ranks: int,
) -> list[MemoryItem]:
    """Weights and adapter items of one rank under `strategy` (ddp or fsdp) with `ranks`."""
    if strategy == "ddp":
        buckets = MemoryItem("DDP gradient buckets", lora_params * 4, "LoRA gradients, flat copy")
        return [*items, buckets]
    shards = [
        MemoryItem(f"{i.what}, 1/{ranks} (FSDP2 shard)", -(-i.bytes // ranks), i.how) for i in items
    ]
    layer_params = sum(lin.in_features * lin.out_features for lin in arch.linears)
    layer_params += 2 * arch.hidden  # the two norms
    root_params = arch.params - arch.layers * layer_params
    gathered = (root_params + 2 * layer_params) * size
    how = f"root ({root_params:,}) + 2 layers ({layer_params:,} each) × {size} B, whole"
    return [*shards, MemoryItem("FSDP2: all-gathered units", gathered, how)]
