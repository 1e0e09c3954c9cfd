"""A worker on the tiny model: fast LoRA runs (fp32, short rows), small checkpoints."""

from pathlib import Path

import pytest

from loraplex.worker.settings import WorkerSettings

TINY_TRAINER_ARGS = [
    "--max-length", "128", "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0",
    "--no-gradient-checkpointing", "--warmup-ratio", "0",
]  # fmt: skip


def tiny_worker_settings(store_url: str, base: Path, workdir: Path, **changes) -> WorkerSettings:
    return WorkerSettings(
        store=store_url, base_model=base, workdir=workdir, method="lora", lease_seconds=4.0,
        poll_seconds=0.2, checkpoint_every=5, max_rank=16,
        trainer_args=list(TINY_TRAINER_ARGS), **changes,
    )  # fmt: skip


@pytest.fixture
def worker_settings(tiny_model_dir: Path, tmp_path: Path) -> WorkerSettings:
    return tiny_worker_settings(f"file://{tmp_path / 'store'}", tiny_model_dir, tmp_path / "work")
