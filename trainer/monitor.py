"""What a user watches: the progress bar, TensorBoard logs, the metrics file, peak memory.

The bar shows the step's loss, trained tokens per second (tokens with a
label, counted since this process started training) and tqdm's ETA; the same
numbers go to TensorBoard under `<run>/logs`, and one JSON line per step to
`<run>/metrics.jsonl` (a first `{"event": "start", ...}` line gives the plan),
which a program watching the run (the fine-tuning worker) reads as it grows.
"""

import json
import resource
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from loraplex.trainer.loop import StepResult


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the most memory tensors ever held; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # VmHWM is this process's own high-water mark. Linux keeps ru_maxrss across
    # fork and exec, so a trainer started by a big process (pytest, a worker)
    # reported its parent's peak: 1.86 GB for a 0.55 GB run in the fresh-clone tests.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * 1024


class Monitor:
    def __init__(
        self,
        total_steps: int,
        start_step: int,
        log_dir: Path | None,
        progress: bool,
        main: bool = True,  # False on ranks other than 0: they show nothing
        metrics_file: Path | None = None,
        start: dict | None = None,  # the plan, the first line of the metrics file
    ) -> None:
        self.main = main
        self.metrics = metrics_file.open("a", buffering=1) if metrics_file and main else None
        if self.metrics is not None:
            self._line({"event": "start", "total_steps": total_steps, **(start or {})})
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            desc="train",
            disable=not progress,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))
        self.tokens = 0
        self.started = time.monotonic()

    def step(self, step: int, result: StepResult) -> None:
        self.tokens += result.tokens
        rate = self.tokens / max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix(loss=f"{result.loss:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
        self.bar.update(1)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", result.loss, step)
            self.writer.add_scalar("train/lr", result.lr, step)
            self.writer.add_scalar("train/tokens_per_second", rate, step)
            if result.grad_norm is not None:
                self.writer.add_scalar("train/grad_norm", result.grad_norm, step)
        if self.metrics is not None:
            self._line(
                {
                    "step": step,
                    "train_loss": round(result.loss, 6),
                    "learning_rate": result.lr,
                    "tokens": result.tokens,
                    "tokens_per_second": round(rate, 1),
                }
            )

    def _line(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")

    def epoch(self, epoch: int, step: int, train_loss: float, eval_loss: float | None) -> None:
        if not self.main:
            return
        line = f"epoch {epoch + 1}: train loss {train_loss:.4f}"
        if eval_loss is not None:
            line += f", eval loss {eval_loss:.4f}"
            if self.writer is not None:
                self.writer.add_scalar("eval/loss", eval_loss, step)
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.writer is not None:
            self.writer.close()
