"""The worker's settings: one dataclass, filled by the command line."""

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerSettings:
    store: str | None  # the adapter store URL (default $LORAPLEX_STORE)
    base_model: Path  # resolved base model directory: what every job trains on
    workdir: Path = Path(".loraplex/worker")
    method: str = "qlora"  # qlora (the served 4-bit base) or lora
    lease_seconds: float = 30.0  # a job whose worker is silent this long is taken back
    poll_seconds: float = 1.0
    max_attempts: int = 3  # claims of one job before a lost worker fails it
    checkpoint_every: int = 10  # steps; each checkpoint is uploaded for resuming
    keep_checkpoint_models: int = 3  # checkpoints published as servable models on success
    min_examples: int = 10  # OpenAI's minimum (invalid_n_examples below it)
    max_rank: int = 16
    nproc_per_node: int | None = None  # >1: torchrun across this machine's GPUs
    trainer_args: list[str] = field(default_factory=list)  # more `loraplex train` flags
    worker_id: str = field(default_factory=worker_id)
