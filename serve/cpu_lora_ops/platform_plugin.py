"""vLLM platform plugin (entry point `vllm.platform_plugins`: `loraplex_cpu`).

Contract: where vLLM would pick its own CPU platform, `detect()` names
loraplex's (platform.py): vLLM's `CpuPlatform` in every respect but the
punica wrapper its LoRA layers call (wrapper.py). Anywhere else (GPUs, AMD
Zen with zentorch) it returns None and vLLM picks as it would.

vLLM consults platform plugins only when `VLLM_TARGET_DEVICE` is not `cpu`
(it is `cuda` unless set), so with `VLLM_TARGET_DEVICE=cpu` vLLM serves with
its own CPU LoRA ops; `plugin.active_cpu_lora_ops()` then says `vllm`.

This module imports nothing of vLLM's at load: vLLM loads it while it is
still choosing its platform.
"""

VLLM_CPU_PLATFORM = "vllm.platforms.cpu.CpuPlatform"
LORAPLEX_CPU_PLATFORM = "loraplex.serve.cpu_lora_ops.platform.LoraplexCpuPlatform"


def detect() -> str | None:
    """loraplex's CPU platform where vLLM would choose its own, else None."""
    from vllm.platforms import cpu_platform_plugin

    return LORAPLEX_CPU_PLATFORM if cpu_platform_plugin() == VLLM_CPU_PLATFORM else None
