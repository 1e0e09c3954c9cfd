"""How long a run takes: measured on this CPU, or from a FLOPs model on a named GPU.

CPU: a short measured calibration that runs the trainer's own steps. The
base is built from `config.json` with random weights at the run's precision
(4-bit NF4 for QLoRA, computing at the trainer's dtype), made trainable by
the trainer's own `prepare_for_training` (LoRA, checkpointing) and its CPU
dropout, and trained by `train_step` (loss, backward, clipping, AdamW) on
steps of the run's own plan, collated from the real data as the trainer
collates them, with this process's torch threads (the trainer's default).
The first step is timed on its own (it pays the one-time costs the run's
first step pays); steps spread over the plan (10–30 s of them) give seconds
per processed token, which covers what a step costs besides its matmuls (the
optimizer, Python, per-op overheads that dominate small models). The run:
first step + rate × the rest of its tokens. It is as good as the machine is
steady: another job on the cores during the run or the calibration moves it.

GPU: FLOPs / (dense bf16 peak × MFU). A LoRA step costs about 2N FLOPs per
token forward and 2N backward (gradients flow to the inputs; frozen weights
get none), plus 2N more when checkpointing recomputes the forward; the head
runs on trained tokens only. The MFU is an assumption (see MFU below), not
yet calibrated on a GPU in this project.
"""

import os

import torch

from loraplex.estimate.architecture import Architecture
from loraplex.estimate.devices import Device
from loraplex.estimate.results import Shapes, TimeEstimate
from loraplex.estimate.shapes import PlannedData, laid_out_tokens
from loraplex.trainer.config import TrainConfig

# Model FLOPs utilisation assumed on a GPU: published LoRA fine-tuning runs of
# 7–8B models with fused attention land near 0.4 in bf16; 4-bit weights cost
# a dequantization per matmul. Not calibrated here: no GPU was available.
MFU = {"lora": 0.40, "qlora": 0.30}
# The calibration: the plan's first step, then steps spread over the plan, at
# least this many and for at least this long, and at most CALIBRATION_SECONDS.
CALIBRATION_STEPS = 4
CALIBRATION_MIN_SECONDS = 10.0
CALIBRATION_SECONDS = 30.0
# A model whose estimated peak passes this share of the machine's memory is
# not built to be timed (the run itself would not fit).
MEMORY_SHARE = 0.8


def estimate_time(
    planned: PlannedData, hf_config, arch: Architecture, device: Device, s: Shapes, peak_bytes: int
) -> TimeEstimate:
    if device.kind == "cuda":
        return gpu_time(planned.config, arch, device, s)
    return cpu_time(planned, hf_config, peak_bytes)


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


def cpu_time(planned: PlannedData, hf_config, peak_bytes: int) -> TimeEstimate:
    """The run's seconds from a few of its own steps timed here (calibration.py)."""
    from loraplex.estimate.calibration import calibrate

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if peak_bytes > MEMORY_SHARE * memory:
        return TimeEstimate(0.0, 0.0, None, "not measured: the run does not fit this machine")
    threads = torch.get_num_threads()
    load = os.getloadavg()[0]
    c = calibrate(
        planned, hf_config, CALIBRATION_STEPS, CALIBRATION_MIN_SECONDS, CALIBRATION_SECONDS
    )
    lengths = [len(e) for e in planned.examples]
    packing = planned.config.data.packing
    tokens = [
        sum(laid_out_tokens(mb, lengths, packing, c.flat) for mb in step.micro_batches)
        for step in planned.plan
    ]
    seconds = c.first_seconds + c.seconds_per_token * sum(tokens[1:])
    trained = sum(e.trained_tokens for e in planned.examples) * planned.config.training.epochs
    how = (
        f"measured on this CPU ({threads} threads, load {load:.1f}): the run's first step "
        f"{c.first_seconds:.2f} s, then {1e6 * c.seconds_per_token:.0f} µs per token "
        f"({c.steps} of its steps timed)"
    )
    return TimeEstimate(seconds, trained / seconds, None, how)
