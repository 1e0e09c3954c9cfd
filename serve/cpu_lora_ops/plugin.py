"""vLLM plugin (entry point `vllm.general_plugins`: `loraplex_cpu_lora_ops`).

Contract: vLLM calls `register()` in every process it starts (API server,
engine core, workers) before any model runs, and may call it more than once.
On the CPU platform it points the six LoRA ops that
`vllm.lora.punica_wrapper.punica_cpu` calls (`bgmv_shrink`, `bgmv_expand`,
`bgmv_expand_slice` and the `sgmv_*` forms) at one implementation, chosen by
the environment variable `LORAPLEX_CPU_LORA_OPS`:

- `loraplex` (default): loraplex's grouped ops (ops.py), correct for rows
  without LoRA and several times faster;
- `vllm`: vLLM's own `vllm.lora.ops.torch_ops`, for side-by-side comparisons.

On any other platform it changes nothing. Engine processes inherit the
environment, so set the variable before the engine starts. If `VLLM_PLUGINS`
is set it must name `loraplex_cpu_lora_ops` (and `bitsandbytes`, for 4-bit).
"""

import os

from vllm.logger import init_logger

# A child of vLLM's logger: vLLM configures its handler in every process it
# starts, so the line appears in the engine core's log too.
logger = init_logger("vllm.loraplex_cpu_lora_ops")

ENV = "LORAPLEX_CPU_LORA_OPS"
CHOICES = ("loraplex", "vllm")

_active: str | None = None


class CpuLoraOpsChoiceError(ValueError):
    """`LORAPLEX_CPU_LORA_OPS` names no implementation."""


def register() -> None:
    """Install the chosen CPU LoRA ops (called by vLLM's plugin loader)."""
    global _active
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        _active = "none"
        return
    choice = os.environ.get(ENV, "loraplex").strip().lower() or "loraplex"
    if choice not in CHOICES:
        raise CpuLoraOpsChoiceError(f"{ENV}={choice!r} is not an option: use 'loraplex' or 'vllm'")

    import vllm.lora.ops.torch_ops as vllm_ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    from loraplex.serve.cpu_lora_ops import ops as loraplex_ops

    source = loraplex_ops if choice == "loraplex" else vllm_ops
    for name in loraplex_ops.OPS:
        setattr(punica_cpu, name, getattr(source, name))
    if _active != choice:
        logger.info("CPU LoRA ops: %s (%s=%s)", choice, ENV, choice)
    _active = choice


def active_cpu_lora_ops() -> str:
    """'loraplex', 'vllm', or 'none' (not the CPU platform) in this process."""
    if _active is None:
        register()
    return _active or "none"
