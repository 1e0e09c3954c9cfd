"""The pre-flight check of `loraplex train` on CUDA: stop before loading what cannot fit.

Runs the config-only estimate (full rows of max_length: the worst micro-batch
a packed run can see) against the device's free memory, before the model
loads. If the peak is over, it stops with the estimate and the first change
that would fit (checkpointing, a smaller batch, qlora, a shorter max
length, more ranks with fsdp). `--no-preflight` skips it; on the CPU it is not run.
"""

import os
from pathlib import Path

from loraplex.estimate.errors import EstimateError
from loraplex.trainer.config import TrainConfig
from loraplex.trainer.errors import TrainError


class DoesNotFit(EstimateError, TrainError):
    """The run's estimated peak exceeds the device's free memory (`loraplex train` reports
    it as a user's problem, like any TrainError)."""


def check_fits(config: TrainConfig, base_model: Path) -> None:
    import torch

    from loraplex.trainer.model import pick_device

    device = pick_device(config.training.device)
    if device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(device)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))  # under torchrun: this rank's share
    check_fits_on(config, base_model, torch.cuda.get_device_name(device), free, ranks)


def check_fits_on(
    config: TrainConfig, base_model: Path, name: str, free_bytes: int, ranks: int = 1
) -> None:
    """Raise DoesNotFit when the estimated peak (of one rank) is over `free_bytes` of a CUDA
    device."""
    from loraplex.estimate.devices import Device
    from loraplex.estimate.report import size, train_table
    from loraplex.estimate.train import estimate_training, smallest_change_that_fits

    device = Device(name, "cuda", free_bytes)
    estimate = estimate_training(config, base_model, device, ranks=ranks)
    if estimate.fits:
        return
    change = smallest_change_that_fits(config, base_model, device, ranks)
    advice = f"try {change}" if change else "no single change fits"
    raise DoesNotFit(
        f"the run needs about {size(estimate.peak_bytes)} on {name}, which has "
        f"{size(free_bytes)} free: {advice} (or --no-preflight to try anyway)\n"
        + train_table(estimate)
    )
