"""vLLM plugin (entry point `vllm.general_plugins`: `loraplex_cpu_lora_ops`).

Contract: vLLM calls `register()` in every process it starts (API server,
engine core, workers) before any model runs. On the CPU platform it swaps
the six LoRA ops that `vllm.lora.punica_wrapper.punica_cpu` imported from
`vllm.lora.ops.torch_ops` for loraplex's (see ops.py); on any other
platform it does nothing. `LORAPLEX_CPU_LORA_OPS=vllm` keeps vLLM's own ops,
for side-by-side comparisons. It may run more than once per process.
If `VLLM_PLUGINS` is set, it must name this plugin (and `bitsandbytes`).
"""

import logging
import os

logger = logging.getLogger("loraplex.cpu_lora_ops")

ENV = "LORAPLEX_CPU_LORA_OPS"
_active: str | None = None


def register() -> None:
    global _active
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        _active = "none"
        return
    choice = os.environ.get(ENV, "loraplex")
    if choice not in ("loraplex", "vllm"):
        raise ValueError(f"{ENV}={choice!r}: use 'loraplex' or 'vllm'")
    if choice == "loraplex":
        import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

        from loraplex.serve.cpu_lora_ops import ops

        for name in ops.OPS:
            setattr(punica_cpu, name, getattr(ops, name))
    if _active != choice:
        logger.info("CPU LoRA ops: %s", choice)
    _active = choice


def active_cpu_lora_ops() -> str:
    """'loraplex', 'vllm', or 'none' (not the CPU platform) in this process."""
    if _active is None:
        register()
    return _active or "none"
