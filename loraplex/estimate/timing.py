"""How long a run takes: measured on this CPU, or from a FLOPs model on a named GPU.

CPU: one decoder layer of the base, built from `config.json` with random
weights at the run's precision (4-bit NF4 for QLoRA), with the run's LoRA
layers, dropout and attention, runs forward and backward on a packed row of
examples of the data's mean length, and the output head's loss runs on one
chunk: a short measured calibration (a few seconds). The run's time is that
per-token cost times the run's tokens, layers and recomputation.

GPU: FLOPs / (dense bf16 peak × MFU). A LoRA step costs about 2N FLOPs per
token forward and 2N backward (gradients flow to the inputs; frozen weights
get none), plus 2N more when checkpointing recomputes the forward; the head
runs on trained tokens only. The MFU is an assumption (see MFU below), not
yet calibrated on a GPU in this project.
"""

import time
from pathlib import Path

import torch

from loraplex.estimate.architecture import Architecture, decoder_layers, meta_model
from loraplex.estimate.devices import Device
from loraplex.estimate.lora_model import compute_dtype
from loraplex.estimate.results import Shapes, TimeEstimate
from loraplex.trainer.config import TrainConfig

# Model FLOPs utilisation assumed on a GPU: published LoRA fine-tuning runs of
# 7–8B models with fused attention land near 0.4 in bf16; 4-bit weights cost
# a dequantization per matmul. Not calibrated here: no GPU was available.
MFU = {"lora": 0.40, "qlora": 0.30}
CALIBRATION_TOKENS = 1024  # the longest row timed on the CPU


def estimate_time(
    config: TrainConfig, base_model: Path, hf_config, arch: Architecture, device: Device, s: Shapes
) -> TimeEstimate:
    if device.kind == "cuda":
        return gpu_time(config, arch, device, s)
    return cpu_time(config, hf_config, arch, s)


def decoder_flops_per_token(arch: Architecture, example_tokens: float) -> float:
    """Forward FLOPs of the decoder per token: matmuls, and causal attention over the example."""
    linear = 2 * arch.layers * sum(lin.in_features * lin.out_features for lin in arch.linears)
    attention = 2 * arch.layers * example_tokens * arch.attention_heads * arch.head_dim
    return linear + attention


def gpu_time(config: TrainConfig, arch: Architecture, device: Device, s: Shapes) -> TimeEstimate:
    passes = 3 if config.training.gradient_checkpointing else 2  # forward, backward (, recompute)
    example = s.mean_example_tokens or config.data.max_length
    flops = s.run_tokens * passes * decoder_flops_per_token(arch, example)
    flops += s.run_trained_tokens * 2 * 2 * arch.vocab * arch.hidden  # head: logits + grad
    if device.bf16_flops is None:
        return TimeEstimate(0.0, 0.0, flops, "no GPU named (--gpu): FLOPs only")
    mfu = MFU[config.method]
    seconds = flops / (device.bf16_flops * mfu)
    how = f"{flops:.3g} FLOPs / ({device.bf16_flops / 1e12:.0f} TFLOP/s × MFU {mfu}, assumed)"
    return TimeEstimate(seconds, s.run_trained_tokens / seconds, flops, how)


def cpu_time(config: TrainConfig, hf_config, arch: Architecture, s: Shapes) -> TimeEstimate:
    layer_seconds, tokens = time_layer(config, hf_config, arch, s)
    passes = 2 if config.training.gradient_checkpointing else 1
    forward, backward = layer_seconds
    per_token = arch.layers * (passes * forward + backward) / tokens
    head_per_token = time_head(config, arch)
    seconds = s.run_tokens * per_token + s.run_trained_tokens * head_per_token
    how = (
        f"measured on this CPU ({torch.get_num_threads()} threads): one layer "
        f"{1e6 * per_token / arch.layers:.0f} µs/token, head {1e6 * head_per_token:.0f} µs/token"
    )
    return TimeEstimate(seconds, s.run_trained_tokens / seconds, None, how)


def real_layer(config: TrainConfig, hf_config, arch: Architecture):
    """Decoder layer 0 with random weights on the CPU, at the run's precision, with LoRA."""
    from peft import LoraConfig, inject_adapter_in_model

    from loraplex.trainer.attention import NAME as PACKED_ATTENTION
    from loraplex.trainer.dropout import use_cheap_lora_dropout
    from loraplex.trainer.model import PER_EXAMPLE_ATTENTION_MODEL_TYPES, linear_module_names

    dtype = compute_dtype(config.method, "cpu")
    per_example = arch.model_type in PER_EXAMPLE_ATTENTION_MODEL_TYPES
    attention = PACKED_ATTENTION if per_example else "sdpa"
    model = meta_model(hf_config, dtype, attention)
    layer = decoder_layers(model)[0]
    layer.to_empty(device="cpu")
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
    if config.method == "qlora":
        quantize_linears(layer)
    for p in layer.parameters():
        p.requires_grad_(False)
    lora = config.lora
    targets = lora.target_modules
    if targets == "all-linear":
        targets = linear_module_names(model)
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets)
    )
    layer = inject_adapter_in_model(peft_config, layer)
    for name, p in layer.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)
    use_cheap_lora_dropout(layer)
    layer.train()
    return layer, model


def quantize_linears(module: torch.nn.Module, dtype: torch.dtype | None = None) -> None:
    """Swap every linear layer for bitsandbytes' 4-bit NF4, computing as the trainer does."""
    import bitsandbytes as bnb

    from loraplex.trainer.model import base_dtype

    dtype = dtype or base_dtype("qlora", torch.device("cpu"))

    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            q = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=dtype,
                compress_statistics=True,
                quant_type="nf4",
            )
            q.weight = bnb.nn.Params4bit(
                child.weight.data.to(dtype),
                requires_grad=False,
                compress_statistics=True,
                quant_type="nf4",
            )
            setattr(module, name, q.to("cpu"))
        else:
            quantize_linears(child, dtype)


def time_layer(config, hf_config, arch: Architecture, s: Shapes):
    """(forward, backward) seconds of one layer on a row of examples of the mean length."""
    layer, model = real_layer(config, hf_config, arch)
    tokens = min(s.tokens, CALIBRATION_TOKENS)
    example = max(1, min(round(s.mean_example_tokens or tokens), tokens))
    positions = torch.cat([torch.arange(example)] * (tokens // example + 1))[:tokens][None]
    dtype = compute_dtype(config.method, "cpu")
    hidden = torch.randn(1, tokens, arch.hidden, dtype=dtype, requires_grad=True)
    kwargs = dict(position_ids=positions, attention_mask=None)
    rotary = getattr(model.get_decoder(), "rotary_emb", None)
    if rotary is not None:
        rotary = rotary.to_empty(device="cpu")
        rotary.__init__(model.config)  # recompute its buffers (inv_freq) on the CPU
        kwargs["position_embeddings"] = rotary(hidden, positions)
    best = (float("inf"), float("inf"))
    for _ in range(3):
        started = time.perf_counter()
        out = layer(hidden, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        middle = time.perf_counter()
        out.backward(torch.ones_like(out))
        done = time.perf_counter()
        best = min(best, (middle - started, done - middle), key=sum)
    return best, tokens


def time_head(config: TrainConfig, arch: Architecture) -> float:
    """Seconds per trained token of the loss head (trainer/loss.py), on one chunk."""
    from loraplex.trainer.loss import LOGITS_CHUNK, FrozenHeadCrossEntropy

    dtype = compute_dtype(config.method, "cpu")
    tokens = LOGITS_CHUNK
    weight = torch.randn(arch.vocab, arch.hidden, dtype=dtype) * 0.02
    hidden = torch.randn(tokens, arch.hidden, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, arch.vocab, (tokens,))
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        FrozenHeadCrossEntropy.apply(hidden, weight, None, targets, LOGITS_CHUNK).backward()
        best = min(best, time.perf_counter() - started)
    return best / tokens
