"""vLLM general plugin (entry point `vllm.general_plugins`: `loraplex_cpu_lora_ops`).

Contract: vLLM calls `register()` in every process it starts (API server,
engine core, workers) before any model runs, and may call it more than once.
It reads which CPU LoRA ops loraplex's punica wrapper (wrapper.py) runs,
from the environment variable `LORAPLEX_CPU_LORA_OPS`:

- `loraplex` (default): one fused shrink and expand per module over rows
  grouped by slot (fused.py, ops.py), correct for rows without LoRA and
  several times faster;
- `grouped`: loraplex's grouped ops (ops.py) slice by slice, as vLLM calls
  them, without the fused copy: what `loraplex` was before it, for
  side-by-side comparisons;
- `vllm`: vLLM's own `vllm.lora.ops.torch_ops`, for side-by-side comparisons.

It patches nothing: the wrapper is vLLM's to build, named by loraplex's CPU
platform (platform_plugin.py). Engine processes inherit the environment, so
set the variable before the engine starts. If `VLLM_PLUGINS` is set it must
name `loraplex_cpu_lora_ops` and `loraplex_cpu` (and `bitsandbytes`, for 4-bit).
"""

import os

from vllm.logger import init_logger

# A child of vLLM's logger: vLLM configures its handler in every process it
# starts, so the line appears in the engine core's log too.
logger = init_logger("vllm.loraplex_cpu_lora_ops")

ENV = "LORAPLEX_CPU_LORA_OPS"
CHOICES = ("loraplex", "grouped", "vllm")

_chosen: str | None = None


class CpuLoraOpsChoiceError(ValueError):
    """`LORAPLEX_CPU_LORA_OPS` names no implementation."""


def register() -> None:
    """Read the choice of CPU LoRA ops (called by vLLM's plugin loader)."""
    global _chosen
    choice = os.environ.get(ENV, "loraplex").strip().lower() or "loraplex"
    if choice not in CHOICES:
        options = "'loraplex', 'grouped' or 'vllm'"
        raise CpuLoraOpsChoiceError(f"{ENV}={choice!r} is not an option: use {options}")
    if _chosen != choice and _loraplex_platform():
        logger.info("CPU LoRA ops: %s (%s=%s)", choice, ENV, choice)
    _chosen = choice


def chosen_ops() -> str:
    """The ops loraplex's punica wrapper runs: one of CHOICES."""
    if _chosen is None:
        register()
    return _chosen or "loraplex"


def active_cpu_lora_ops() -> str:
    """One of CHOICES on the CPU platform ('vllm' without loraplex's platform), 'none'
    on any other, in this process."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return "none"
    return chosen_ops() if _loraplex_platform() else "vllm"


def _loraplex_platform() -> bool:
    from vllm.platforms import current_platform

    from loraplex.serve.cpu_lora_ops.platform import WRAPPER

    return current_platform.is_cpu() and current_platform.get_punica_wrapper() == WRAPPER
