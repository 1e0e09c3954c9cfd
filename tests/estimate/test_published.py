"""The estimate against published GPU figures, from config files only (no weights, no GPU).

torchtune's Llama-3.1-8B single-device figures (packed rows of 2,048 tokens,
batch 2, activation checkpointing, LoRA rank 8 on q/v/output and the MLP) are
PyTorch's peak reserved memory: tensors and the caching allocator, not the
CUDA context. So they are compared with the estimate less its CUDA context.
"""

from pathlib import Path

import pytest

from loraplex.estimate.devices import CUDA_CONTEXT, gpu
from loraplex.estimate.serve import estimate_serving
from loraplex.estimate.train import estimate_training
from loraplex.trainer.config import load_config

LLAMA_8B = Path(__file__).parent / "data" / "llama-3.1-8b"
GiB = 1 << 30
TORCHTUNE_TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def torchtune_config(method: str):
    return load_config(
        None,
        {
            "base_model": str(LLAMA_8B),
            "method": method,
            "data.train": ["unused.jsonl"],
            "data.max_length": 2048,
            "training.batch_size": 2,
            "training.gradient_checkpointing": True,
            "lora.r": 8,
            "lora.alpha": 16,
            "lora.dropout": 0.0,
            "lora.target_modules": TORCHTUNE_TARGETS,
        },
    )


@pytest.fixture(scope="module")
def estimates() -> dict:
    return {
        method: estimate_training(torchtune_config(method), LLAMA_8B, gpu("rtx4090"))
        for method in ("qlora", "lora")
    }


@pytest.mark.parametrize(("method", "published_gib"), [("qlora", 7.4), ("lora", 16.2)])
def test_llama_3_1_8b_training_peak_is_within_20_percent_of_torchtune(
    estimates, method, published_gib
):
    estimate = estimates[method]
    reserved = estimate.peak_bytes - CUDA_CONTEXT
    assert abs(reserved / (published_gib * GiB) - 1) <= 0.20, (reserved / GiB, published_gib)
    assert estimate.shapes.tokens == 2 * 2048
    assert estimate.fits  # both ran on a 24 GB RTX 4090


def test_llama_3_1_8b_kv_cache_is_128_kib_per_token_in_bf16():
    estimate = estimate_serving(LLAMA_8B, quantization="none", dtype="bfloat16", device=gpu("h100"))
    assert estimate.kv_bytes_per_token == 128 * 1024
    assert estimate.max_model_len == 131072  # the config's, when not given


def test_qlora_weights_are_about_a_third_of_bf16_weights_for_llama_8b(estimates):
    weights = {
        method: sum(i.bytes for i in e.items if "base weights" in i.what)
        for method, e in estimates.items()
    }
    # 6.98B linear weights at 4.13 bits + 1.05B embedding/head at bf16, against 8.03B at bf16
    assert weights["lora"] == 8_030_261_248 * 2
    assert 0.33 < weights["qlora"] / weights["lora"] < 0.37
