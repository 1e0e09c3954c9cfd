"""One optimizer step and one evaluation pass: the inside of the training loop.

`accumulate` runs the micro-batches of one step and leaves their gradient
in the parameters: each micro-batch's loss sum is divided by the trained
tokens of the *whole step*, so the accumulated gradient is the mean over
those tokens however the step is split (see loss.py).
"""

from dataclasses import dataclass

import torch

from loraplex.trainer.loss import token_loss_sum
from loraplex.trainer.packing import Batch


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over the step's trained tokens
    tokens: int  # trained tokens in the step
    grad_norm: float | None
    lr: float


def accumulate(model: torch.nn.Module, batches: list[Batch], device: torch.device):
    """Forward and backward every micro-batch; returns (loss sum, trained tokens)."""
    total = sum(batch.trained_tokens for batch in batches)
    loss_sum = 0.0
    for batch in batches:
        if not batch.trained_tokens:
            continue
        loss = token_loss_sum(model, batch.to(device))
        (loss / total).backward()
        loss_sum += loss.item()
    return loss_sum, total


def train_step(
    model: torch.nn.Module,
    batches: list[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: list[torch.nn.Parameter],
    max_grad_norm: float | None,
    device: torch.device,
) -> StepResult:
    lr = scheduler.get_last_lr()[0]
    loss_sum, tokens = accumulate(model, batches, device)
    grad_norm = None
    if max_grad_norm is not None:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_sum / max(tokens, 1), tokens, grad_norm, lr)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[Batch], device: torch.device) -> float:
    """Mean loss per trained token over all `batches`, with dropout off."""
    was_training = model.training
    model.eval()
    loss_sum, tokens = 0.0, 0
    try:
        for batch in batches:
            if batch.trained_tokens:
                loss_sum += token_loss_sum(model, batch.to(device)).item()
                tokens += batch.trained_tokens
    finally:
        model.train(was_training)
    return loss_sum / max(tokens, 1)
