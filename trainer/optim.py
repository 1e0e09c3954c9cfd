"""Optimizer and learning-rate schedule.

QLoRA on CUDA uses bitsandbytes' paged 8-bit AdamW (optimizer state in 8
bits, paged to host memory under pressure); everything else uses PyTorch's
AdamW, since bitsandbytes' paged optimizers need CUDA.
"""

import math

import torch

from loraplex.trainer.config import TrainingSettings


def make_optimizer(
    params: list[torch.nn.Parameter], settings: TrainingSettings, method: str, device: torch.device
) -> torch.optim.Optimizer:
    if method == "qlora" and device.type == "cuda":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainingSettings, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then cosine or linear decay to zero, or constant."""
    warmup = math.ceil(settings.warmup_ratio * total_steps)
    decay = settings.lr_scheduler

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if decay == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if decay == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
