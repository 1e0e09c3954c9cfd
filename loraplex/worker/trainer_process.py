"""The trainer as a child process: `loraplex train …` (torchrun across GPUs with
`--nproc-per-node`), in its own process group, so a cancel stops all of it in
seconds and a worker that dies takes it along (PR_SET_PDEATHSIG)."""

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from loraplex.jobs.records import Hyperparameters, JobRecord
from loraplex.worker.settings import WorkerSettings

BASE_LEARNING_RATE = 2e-4  # the trainer's default: `learning_rate_multiplier` scales it
DEFAULT_EPOCHS = 3  # the trainer's default, what `n_epochs: auto` resolves to


def requested(job: JobRecord) -> Hyperparameters:
    """As the client asked: a resumed run must resolve `auto` again, the same way."""
    return job.requested or job.hyperparameters


def resolved_epochs(job: JobRecord) -> int:
    n = requested(job).n_epochs
    return DEFAULT_EPOCHS if n == "auto" else int(n)


def resolved_multiplier(job: JobRecord) -> float:
    m = requested(job).learning_rate_multiplier
    return 1.0 if m == "auto" else float(m)


KEEP_EVERY_CHECKPOINT = 1_000_000


def train_command(job: JobRecord, settings: WorkerSettings, resume: bool) -> list[str]:
    """Relative paths only: a run resumed on another worker must have the same settings."""
    batch = requested(job).batch_size
    command = [
        sys.executable, "-m", "loraplex.cli", "train",
        "--base-model", str(settings.base_model),
        "--method", settings.method,
        "--data", "training.jsonl",
        "--output", "run",
        "--epochs", str(resolved_epochs(job)),
        "--batch-size", str(batch),
        "--lr", repr(BASE_LEARNING_RATE * resolved_multiplier(job)),
        "--seed", str(job.seed),
        "--checkpoint-every", str(settings.checkpoint_every),
        # The worker uploads every checkpoint, then deletes it: the trainer must not
        # rotate one away before the worker has seen it (a fast trainer writes several
        # between two polls).
        "--keep-checkpoints", str(KEEP_EVERY_CHECKPOINT),
        "--max-rank", str(settings.max_rank),
        "--no-progress",
    ]  # fmt: skip
    if job.validation_file:
        command += ["--eval-data", "validation.jsonl"]
    if settings.nproc_per_node and settings.nproc_per_node > 1:
        command += ["--nproc-per-node", str(settings.nproc_per_node)]
    if resume:
        command.append("--resume")
    return command + list(settings.trainer_args)


def _die_with_parent() -> None:
    os.setsid()
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    log = (cwd / "train.log").open("ab")
    return subprocess.Popen(
        command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
    )


def stop(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the trainer's process group, SIGKILL what is left after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def failure_message(cwd: Path) -> str:
    """The trainer's one-line `error: …`, or the log's last line (a crash)."""
    lines = (cwd / "train.log").read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else "the trainer exited without a message"


class MetricsTail:
    """New lines of the trainer's `metrics.jsonl` since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]
