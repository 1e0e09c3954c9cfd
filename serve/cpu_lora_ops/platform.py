"""loraplex's CPU platform: vLLM's, with loraplex's punica wrapper (see platform_plugin.py)."""

from vllm.platforms.cpu import CpuPlatform

WRAPPER = "loraplex.serve.cpu_lora_ops.wrapper.LoraplexPunicaWrapperCPU"


class LoraplexCpuPlatform(CpuPlatform):
    @classmethod
    def get_punica_wrapper(cls) -> str:
        return WRAPPER
