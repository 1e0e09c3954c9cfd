"""The training record: how an adapter was made, kept in its manifest.

Enough to reproduce and to judge the run: the full configuration, each
data file's sha256 and what became of its records, the library versions,
the losses, tokens, time and peak memory; and, for a run on several ranks,
the world size, strategy, nodes and each rank's peak memory and parameters.
"""

import platform
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel

from loraplex.trainer.checkpoint import TrainState
from loraplex.trainer.config import TrainConfig
from loraplex.trainer.dataset import FileSummary

LIBRARIES = ("loraplex", "torch", "transformers", "peft", "bitsandbytes", "tokenizers")


class DistributedRecord(BaseModel):
    """How the run was spread: one entry per rank in the lists, in rank order."""

    world_size: int = 1
    strategy: str = "none"  # none (one process), ddp or fsdp
    nodes: int = 1
    peak_memory_bytes: list[int] = []  # per rank
    parameter_bytes: list[int] = []  # per rank: all under DDP, about 1/N under FSDP2


class TrainingRecord(BaseModel):
    method: str
    base_model: str
    device: str
    config: dict  # as trained: `auto` settings hold their resolved values
    resolved: dict[str, Any]  # the settings `auto` resolved, e.g. {"training.batch_size": 1}
    data: list[dict]
    train_examples: int
    eval_examples: int
    versions: dict[str, str]
    steps: int
    epochs: int
    trained_tokens: int
    train_seconds: float
    tokens_per_second: float
    train_cpu_seconds: float
    peak_memory_bytes: int  # the largest of any rank
    final_loss: float | None
    final_eval_loss: float | None
    epoch_losses: list[dict]
    losses: list[float]  # per optimizer step
    finished_at: str
    distributed: DistributedRecord = DistributedRecord()


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def make_record(
    config: TrainConfig,
    resolved: dict[str, Any],
    base_model: str,
    device: str,
    files: list[FileSummary],
    counts: tuple[int, int],
    state: TrainState,
    peak_memory: int,
    distributed: DistributedRecord | None = None,
) -> TrainingRecord:
    eval_losses = [e["eval_loss"] for e in state.epochs if e.get("eval_loss") is not None]
    return TrainingRecord(
        method=config.method,
        base_model=base_model,
        device=device,
        config=config.to_dict(),
        resolved=resolved,
        data=[asdict(f) for f in files],
        train_examples=counts[0],
        eval_examples=counts[1],
        versions=library_versions(),
        steps=state.step,
        epochs=config.training.epochs,
        trained_tokens=state.trained_tokens,
        train_seconds=round(state.train_seconds, 3),
        tokens_per_second=round(state.trained_tokens / max(state.train_seconds, 1e-9), 1),
        train_cpu_seconds=round(state.train_cpu_seconds, 3),
        peak_memory_bytes=peak_memory,
        final_loss=state.losses[-1] if state.losses else None,
        final_eval_loss=eval_losses[-1] if eval_losses else None,
        epoch_losses=state.epochs,
        losses=[round(loss, 5) for loss in state.losses],
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        distributed=distributed or DistributedRecord(),
    )


def summary(record: TrainingRecord) -> str:
    """The lines printed at the end of a run."""
    memory = record.peak_memory_bytes / 2**20
    kind = "CUDA max allocated" if record.device.startswith("cuda") else "peak RSS"
    lines = [
        f"trained {record.steps} steps, {record.epochs} epochs, {record.trained_tokens:,} tokens "
        f"in {record.train_seconds:.1f} s ({record.tokens_per_second:,.0f} tokens/s)",
        f"final loss {record.final_loss:.4f}" if record.final_loss is not None else "no steps",
        f"peak memory {memory:,.0f} MiB ({kind}, {record.device})",
    ]
    ranks = record.distributed
    if ranks.world_size > 1:
        lines[2] += f"; {ranks.world_size} ranks on {ranks.nodes} node(s), {ranks.strategy}"
    if record.final_eval_loss is not None:
        lines[1] += f", eval loss {record.final_eval_loss:.4f}"
    return "\n".join(lines)
