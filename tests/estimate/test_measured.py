"""The estimates against this machine: a real training run's live peak, vLLM's own KV capacity.

The training case is the cheap corner of bench/bench_estimate.py's matrix
(tiny model, LoRA, checkpointing, 256 tokens): one real `trainer.train` in a
fresh process whose peak RSS follows the live tensors (bench_trainer's memory
pass). The KV case reads the session gateway's log, where vLLM writes the
capacity it resolved.
"""

from pathlib import Path

import pytest

from bench.bench_estimate import measure, predict, vllm_kv_tokens
from bench.bench_trainer import make_dataset
from loraplex.estimate.serve import estimate_serving


@pytest.mark.slow
def test_training_estimate_is_within_15_percent_of_the_measured_live_peak(
    tiny_model_dir: Path, tmp_path: Path
):
    from loraplex.trainer.model import load_tokenizer

    data = tmp_path / "data.jsonl"
    make_dataset(load_tokenizer(tiny_model_dir), 24, 256, data)
    spec = dict(
        model_dir=str(tiny_model_dir), data=str(data), method="lora", length=256, batch=2,
        ckpt=True,
    )  # fmt: skip
    estimate = predict(spec)
    measured = measure(spec, live=True)
    assert measured["steps"] >= 2  # the optimizer's states exist at the measured peak
    ratio = estimate.peak_bytes / measured["peak_memory_bytes"]
    assert abs(ratio - 1) <= 0.15, (estimate.peak_bytes, measured["peak_memory_bytes"])


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
