"""A few of the run's own training steps on this CPU, timed: the CPU time estimate's input.

The model is the run's, with random weights: built from `config.json` at
the trainer's dtype on the CPU (trainer/model.py's
`base_dtype`), its decoder's linear layers swapped for bitsandbytes' 4-bit
NF4 for QLoRA, then made trainable by the trainer's own
`prepare_for_training` and CPU dropout. The steps are the trainer's own
`train_step` on micro-batches of the run's plan, collated from the real
data, timed from collation to the optimizer's step as the trainer times
them. Global RNG state is left as it was.
"""

import time
from dataclasses import dataclass

import torch

from loraplex.estimate.shapes import PlannedData
from loraplex.trainer.config import TrainConfig


@dataclass(frozen=True)
class Calibration:
    first_seconds: float  # the plan's first step (one-time costs included)
    seconds_per_token: float  # over the later steps timed, per processed token
    steps: int  # later steps timed
    flat: bool  # packed rows laid end to end (per-example attention)


def random_model(config: TrainConfig, hf_config):
    """The run's model with random weights on the CPU, ready to train as the trainer's is."""
    from transformers import AutoModelForCausalLM

    from loraplex.trainer.dropout import use_cheap_lora_dropout
    from loraplex.trainer.model import (
        PER_EXAMPLE_ATTENTION_MODEL_TYPES,
        base_dtype,
        prepare_for_training,
    )

    cpu = torch.device("cpu")
    dtype = base_dtype(cpu)
    attention = "sdpa"
    if hf_config.model_type in PER_EXAMPLE_ATTENTION_MODEL_TYPES:
        from loraplex.trainer.attention import NAME as attention  # registers it
    base = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=attention)
    if config.method == "qlora":
        quantize_linears(base.get_decoder(), dtype)
    model = prepare_for_training(base, config.lora, config.training.gradient_checkpointing)
    use_cheap_lora_dropout(model)
    return model


def quantize_linears(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Swap every linear layer for bitsandbytes' 4-bit NF4 (double quantization), computing
    at `dtype`, as transformers' 4-bit loading does for the trainer."""
    import bitsandbytes as bnb

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
            if child.bias is not None:
                q.bias = child.bias
            setattr(module, name, q.to("cpu"))
        else:
            quantize_linears(child, dtype)


def calibrate(
    planned: PlannedData, hf_config, steps: int, min_seconds: float, budget_seconds: float
) -> Calibration:
    """Time the plan's first step, then steps spread over the plan: at least `steps` of them
    and `min_seconds`, at most `budget_seconds` (or every step of the plan)."""
    from loraplex.trainer.distributed import Group
    from loraplex.trainer.loop import train_step
    from loraplex.trainer.loss import TokenLoss
    from loraplex.trainer.model import trainable_parameters, uses_per_example_attention
    from loraplex.trainer.optim import make_optimizer
    from loraplex.trainer.packing import collate

    config, plan = planned.config, planned.plan
    cpu = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.training.seed)
        model = random_model(config, hf_config)
        flat = uses_per_example_attention(model)
        loss_fn = TokenLoss(model).train()
        params = list(trainable_parameters(model).values())
        optimizer = make_optimizer(params, config.training, config.method, cpu)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

        def run(step) -> tuple[float, int]:
            started = time.monotonic()
            batches = [
                collate(planned.examples, mb, config.data.packing, planned.pad_id, flat)
                for mb in step.micro_batches
            ]
            train_step(
                loss_fn, batches, optimizer, scheduler, params,
                config.training.max_grad_norm, cpu, Group(),
            )  # fmt: skip
            return time.monotonic() - started, sum(b.input_ids.numel() for b in batches)

        first, _ = run(plan[0])
        seconds = tokens = timed = 0
        for step in spread(plan[1:]):
            took, count = run(step)
            seconds, tokens, timed = seconds + took, tokens + count, timed + 1
            # A window of a few seconds at least: the load of a shared machine comes and goes.
            if (timed >= steps and seconds >= min_seconds) or seconds >= budget_seconds:
                break
    return Calibration(first, seconds / max(tokens, 1), timed, flat)


def spread(items: list) -> list:
    """`items` in an order that covers the whole list early (golden-ratio strides)."""
    order = sorted(range(len(items)), key=lambda i: (i * 0.6180339887) % 1)
    return [items[i] for i in order]
