"""`serve --embedded-worker`: one fine-tuning worker beside the gateway, as a child process.

Contract: the worker is `loraplex worker` on the gateway's store and base
model (QLoRA when the gateway serves the 4-bit base, LoRA otherwise), in a
process of its own, so training never runs in the gateway's process and the
engine keeps serving. It starts after the engine (its memory is what the
trainer's CUDA preflight sees as taken) and dies with the gateway
(PR_SET_PDEATHSIG); stopping the gateway stops it, and a job it was running
is taken back by the next worker once its lease expires.
"""

import ctypes
import logging
import signal
import subprocess
import sys

from loraplex.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


def _die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EmbeddedWorker:
    def __init__(self, command: list[str] | None) -> None:
        self.command = command
        self.process: subprocess.Popen | None = None

    @classmethod
    def for_gateway(cls, settings: ServeSettings, store_url: str) -> "EmbeddedWorker":
        if not settings.runs_embedded_worker(store_url):
            return cls(None)
        method = "qlora" if settings.quantization == "bitsandbytes" else "lora"
        command = [
            sys.executable, "-m", "loraplex.cli", "worker",
            "--store", store_url,
            "--base-model", settings.base_model,
            "--method", method,
            "--max-rank", str(settings.max_lora_rank),
            "--workdir", str(settings.cache_dir.parent / "worker"),
            *settings.worker_args,
        ]  # fmt: skip
        return cls(command)

    async def __aenter__(self) -> "EmbeddedWorker":
        if self.command is not None:
            self.process = subprocess.Popen(self.command, preexec_fn=_die_with_parent)
            logger.info("embedded fine-tuning worker started (pid %d)", self.process.pid)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
