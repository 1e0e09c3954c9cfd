"""One optimizer step and one evaluation pass: the inside of the training loop.

`accumulate` runs this rank's micro-batches of one step and leaves their
gradient in the parameters: each micro-batch's loss sum is divided by the
trained tokens of the *whole step* (on every rank: the count is summed
across ranks), so the accumulated gradient is the mean over those tokens
however the step is split into micro-batches and ranks (see loss.py and
distributed.py). `loss_fn` is the `TokenLoss` module, wrapped by DDP or
FSDP2 when there are several ranks.
"""

from dataclasses import dataclass

import torch

from loraplex.trainer.distributed import Group, full_tensor
from loraplex.trainer.packing import Batch


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over the step's trained tokens (all ranks)
    tokens: int  # trained tokens in the step (all ranks)
    grad_norm: float | None
    lr: float


def _loss(loss_fn: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    batch = batch.to(device)
    return loss_fn(batch.input_ids, batch.targets, batch.position_ids, batch.attention_mask)


def accumulate(
    loss_fn: torch.nn.Module, batches: list[Batch], device: torch.device, group: Group | None = None
) -> tuple[float, int]:
    """Forward and backward this rank's micro-batches; returns the step's (loss sum, tokens).

    With several ranks every micro-batch runs, fillers (no trained token) too:
    the ranks' collectives must pair up. DDP and FSDP2 average gradients over
    ranks, hence the factor `world`.
    """
    group = group or Group()
    total = int(group.sum(sum(batch.trained_tokens for batch in batches)))
    loss_sum = 0.0
    for index, batch in enumerate(batches):
        if not batch.trained_tokens and not group.distributed:
            continue
        with group.accumulating(loss_fn, last=index == len(batches) - 1):
            loss = _loss(loss_fn, batch, device)
            ((loss * group.world) / max(total, 1)).backward()
        loss_sum += loss.item()
    return group.sum(loss_sum), total


def train_step(
    loss_fn: torch.nn.Module,
    batches: list[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: list[torch.nn.Parameter],
    max_grad_norm: float | None,
    device: torch.device,
    group: Group,
) -> StepResult:
    lr = scheduler.get_last_lr()[0]
    loss_sum, tokens = accumulate(loss_fn, batches, device, group)
    grad_norm = None
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        grad_norm = float(full_tensor(norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_sum / max(tokens, 1), tokens, grad_norm, lr)


@torch.no_grad()
def evaluate(
    loss_fn: torch.nn.Module, batches: list[Batch], device: torch.device, group: Group | None = None
) -> float:
    """Mean loss per trained token over every rank's `batches`, with dropout off."""
    group = group or Group()
    was_training = loss_fn.training
    loss_fn.eval()
    loss_sum, tokens = 0.0, 0
    try:
        for batch in batches:
            if batch.trained_tokens or group.distributed:
                loss_sum += _loss(loss_fn, batch, device).item()
                tokens += batch.trained_tokens
    finally:
        loss_fn.train(was_training)
    return group.sum(loss_sum) / max(group.sum(tokens), 1)
