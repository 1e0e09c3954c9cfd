"""At start, log loraplex's serving estimate beside the KV capacity vLLM itself resolved.

A check a reader can make in the log: when the two disagree, either the
estimate (loraplex.estimate.serve) or the settings are not what was meant.
Never stops the server: an estimate that cannot be made is a warning.
"""

import logging
from argparse import Namespace
from pathlib import Path

from loraplex.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


def log_serving_estimate(settings: ServeSettings, args: Namespace, vllm_config) -> None:
    from loraplex.estimate.devices import Device
    from loraplex.estimate.errors import EstimateError
    from loraplex.estimate.report import size
    from loraplex.estimate.serve import estimate_serving

    cache = vllm_config.cache_config
    device = None
    if vllm_config.device_config.device_type == "cuda":
        import torch

        device = Device("cuda", "cuda", torch.cuda.get_device_properties(0).total_memory)
    try:
        estimate = estimate_serving(
            Path(settings.base_model),
            quantization=settings.quantization,
            dtype=str(args.dtype),
            max_model_len=vllm_config.model_config.max_model_len,
            max_loras=settings.max_loras,
            max_lora_rank=settings.max_lora_rank,
            gpu_memory_utilization=cache.gpu_memory_utilization,
            device=device,
            kv_cache_space_bytes=getattr(cache, "kv_cache_memory_bytes", None),
            cpu_lora_ops=settings.cpu_lora_ops,
        )
    except EstimateError as exc:
        logger.warning("no serving estimate: %s", exc)
        return
    weights, slots = estimate.items[0].bytes, estimate.items[1].bytes
    logger.info(
        "serving estimate: weights %s, LoRA slots %s, KV %s per token, KV capacity %s tokens "
        "(%.2f × %d); vLLM reports %s tokens",
        size(weights),
        size(slots),
        size(estimate.kv_bytes_per_token),
        f"{estimate.kv_tokens:,}",
        estimate.concurrent_sequences,
        estimate.max_model_len,
        f"{getattr(cache, 'kv_cache_size_tokens', None) or 0:,}",
    )
