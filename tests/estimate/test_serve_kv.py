"""The serving estimate against vLLM itself: the KV capacity it resolved for the session gateway.

It reads the gateway's log, where vLLM writes "KV cache size: N tokens" and
loraplex's start-up hook writes its own estimate beside it. (The training
estimate against measured live peaks is bench/bench_estimate.py's matrix.)
"""

import pytest

from bench.bench_estimate import vllm_kv_tokens
from loraplex.estimate.serve import estimate_serving


@pytest.mark.engine
def test_kv_capacity_matches_what_vllm_reports(gateway):
    # The session gateway: tiny, float32, max_model_len 1024, VLLM_CPU_KVCACHE_SPACE=1 (GiB).
    reported = vllm_kv_tokens(gateway.log_path.read_text(errors="replace"))
    estimate = estimate_serving(
        gateway.base_model,
        quantization="none",
        dtype="float32",
        max_model_len=1024,
        max_loras=2,
        kv_cache_space_bytes=1 << 30,
    )
    assert abs(estimate.kv_tokens / reported - 1) <= 0.05, (estimate.kv_tokens, reported)
    assert f"vLLM reports {reported:,} tokens" in gateway.log_path.read_text(errors="replace")
