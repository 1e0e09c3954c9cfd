"""Resumable checkpoints: everything needed to continue as if never stopped.

A checkpoint holds the LoRA weights, the optimizer and scheduler states,
the random-number generators and the loop's own state (steps done, tokens,
losses). The data order needs nothing: the plan is a function of the seed
(plan.py), so the step number says where to continue. Each checkpoint is
written to a temporary directory and renamed into place, so a run killed
while saving leaves the previous checkpoint intact.
"""

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
    keep: int,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{state.step:07d}"
    staging = directory / f".{final.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    trainable = {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }
    save_file(trainable, staging / "lora.safetensors")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    torch.save(rng_state(), staging / "rng.pt")
    (staging / "state.json").write_text(json.dumps(asdict(state)))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
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
) -> TrainState:
    """Restore everything saved at `path` into the live objects; return the loop state."""
    try:
        weights = load_file(path / "lora.safetensors")
        optimizer_state = torch.load(path / "optimizer.pt", weights_only=False)
        scheduler_state = torch.load(path / "scheduler.pt", weights_only=False)
        rng = torch.load(path / "rng.pt", weights_only=False)
        state = TrainState.from_json((path / "state.json").read_text())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ResumeError(f"checkpoint {path} is unreadable: {exc}") from None
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != trainable:
        raise ResumeError(f"checkpoint {path} does not hold this run's LoRA weights")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    restore_rng_state(rng)
    return state
