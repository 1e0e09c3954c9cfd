"""Resumable checkpoints: everything needed to continue as if never stopped.

A checkpoint holds the LoRA weights, the optimizer and scheduler states,
the random-number generators and the loop's own state (steps done, tokens,
losses, the number of ranks). The data order needs nothing: the plan is a
function of the seed (plan.py), so the step number says where to continue.
Each checkpoint is written to a temporary directory and renamed into place,
so a run killed while saving leaves the previous checkpoint intact.

With several ranks, rank 0 writes the whole LoRA weights (gathered), the
scheduler and the loop state; each rank writes its own random-number state,
and under FSDP2 its own shard of the optimizer state (`*.rank<N>.pt`), so
every rank's files must reach one directory: on several nodes, a volume they
all mount. A checkpoint resumes only with the number of ranks that wrote it
(that number sets each step's micro-batches and the optimizer's shards).
"""

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from loraplex.trainer.distributed import Group, full_trainable
from loraplex.trainer.errors import ResumeError

PREFIX = "step-"


@dataclass
class TrainState:
    """The loop's own progress, saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    trained_tokens: int = 0
    train_seconds: float = 0.0  # wall time in steps
    train_cpu_seconds: float = 0.0  # this process's CPU time in steps (steadier when shared)
    losses: list[float] = field(default_factory=list)  # per step
    epochs: list[dict] = field(default_factory=list)  # per epoch: train and eval loss
    world_size: int = 1  # ranks of the run that saved it

    @classmethod
    def from_json(cls, text: str) -> "TrainState":
        return cls(**json.loads(text))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _per_rank(name: str, group: Group) -> str:
    """`rng.pt` for rank 0 (and for a one-process run), `rng.rank1.pt` for rank 1, ..."""
    stem, suffix = name.split(".")
    return name if group.main else f"{stem}.rank{group.rank}.{suffix}"


def _local_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state with FSDP2's DTensors as this rank's local shards."""
    state = optimizer.state_dict()
    state["state"] = {
        index: {k: v.to_local() if hasattr(v, "to_local") else v for k, v in values.items()}
        for index, values in state["state"].items()
    }
    return state


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
    keep: int,
    group: Group | None = None,
) -> Path:
    group = group or Group()
    final = directory / f"{PREFIX}{state.step:07d}"
    staging = directory / f".{final.name}.tmp"
    trainable = full_trainable(model)  # every rank: FSDP2 gathers
    if group.main:
        shutil.rmtree(staging, ignore_errors=True)
    group.barrier()
    staging.mkdir(parents=True, exist_ok=True)
    if group.main:
        save_file(trainable, staging / "lora.safetensors")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        (staging / "state.json").write_text(json.dumps(asdict(state)))
    if group.main or group.strategy == "fsdp":
        torch.save(_local_optimizer_state(optimizer), staging / _per_rank("optimizer.pt", group))
    torch.save(rng_state(), staging / _per_rank("rng.pt", group))
    group.barrier()
    if group.main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in list_checkpoints(directory)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    group.barrier()
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    group: Group | None = None,
) -> TrainState:
    """Restore everything saved at `path` into the live objects; return the loop state."""
    group = group or Group()
    try:
        state = TrainState.from_json((path / "state.json").read_text())
        if state.world_size != group.world:
            raise ResumeError(
                f"checkpoint {path} was written by {state.world_size} rank(s); resume it with "
                f"{state.world_size} (torchrun --nproc-per-node ...), not {group.world}: the "
                "number of ranks sets each step's micro-batches and the optimizer's shards"
            )
        weights = load_file(path / "lora.safetensors")
        sharded = group.strategy == "fsdp"
        optimizer_file = _per_rank("optimizer.pt", group) if sharded else "optimizer.pt"
        optimizer_state = torch.load(path / optimizer_file, weights_only=False)
        scheduler_state = torch.load(path / "scheduler.pt", weights_only=False)
        rng = torch.load(path / _per_rank("rng.pt", group), weights_only=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ResumeError(f"checkpoint {path} is unreadable: {exc}") from None
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != trainable:
        raise ResumeError(f"checkpoint {path} does not hold this run's LoRA weights")
    with torch.no_grad():
        for name, tensor in weights.items():
            _copy_whole(params[name], tensor)
    optimizer.load_state_dict(optimizer_state)
    _as_shards(optimizer)
    scheduler.load_state_dict(scheduler_state)
    restore_rng_state(rng)
    return state


def _copy_whole(param: torch.Tensor, tensor: torch.Tensor) -> None:
    """Copy a whole tensor into a parameter, or into this rank's shard of it (FSDP2)."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        shard = distribute_tensor(tensor.to(param.device), param.device_mesh, param.placements)
        param.to_local().copy_(shard.to_local())
    else:
        param.copy_(tensor)


def _as_shards(optimizer: torch.optim.Optimizer) -> None:
    """Saved local shards back into DTensors shaped like their (FSDP2) parameters."""
    from torch.distributed.tensor import DTensor

    for group in optimizer.param_groups:
        for param in group["params"]:
            if not isinstance(param, DTensor):
                continue
            for key, value in optimizer.state.get(param, {}).items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape != ()
                    and not isinstance(value, DTensor)
                ):
                    optimizer.state[param][key] = DTensor.from_local(
                        value, param.device_mesh, param.placements, shape=param.shape,
                        stride=param.stride(), run_check=False,
                    )  # fmt: skip
