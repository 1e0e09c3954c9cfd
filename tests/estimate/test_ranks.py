"""Per-rank estimates across ranks (`--nproc-per-node N`, `--distributed ddp|fsdp`), from
Llama-3.1-8B's config.json; the measured 2-rank check is bench_estimate's `--ranks`."""

from pathlib import Path

import pytest

from loraplex.estimate.devices import pick_device
from loraplex.estimate.preflight import DoesNotFit, check_fits_on
from loraplex.estimate.train import estimate_training
from loraplex.trainer.config import load_config

LLAMA_8B = Path(__file__).parent / "data" / "llama-3.1-8b"


def config(distributed: str = "auto", method: str = "lora", length: int = 2048, batch: int = 2):
    return load_config(
        None,
        {"base_model": str(LLAMA_8B), "method": method, "data.train": ["unused.jsonl"],
         "data.max_length": length, "training.batch_size": batch,
         "training.distributed": distributed},
    )  # fmt: skip


def by_what(estimate) -> dict[str, int]:
    return {item.what: item.bytes for item in estimate.items}


def test_ddp_holds_the_whole_model_per_rank_plus_gradient_buckets():
    gpu = pick_device("h100", None, cpu=False)
    one = estimate_training(config(), LLAMA_8B, gpu)
    ddp = estimate_training(config("ddp"), LLAMA_8B, gpu, ranks=4)
    items = by_what(ddp)
    assert ddp.strategy == "ddp" and ddp.ranks == 4
    assert items["DDP gradient buckets"] == one.lora_params * 4
    assert items["base weights, bf16"] == by_what(one)["base weights, bf16"]
    assert estimate_training(config("auto"), LLAMA_8B, gpu, ranks=4).strategy == "ddp"


def test_fsdp_holds_a_shard_per_rank_plus_the_gathered_units():
    gpu = pick_device("h100", None, cpu=False)
    one = by_what(estimate_training(config(), LLAMA_8B, gpu))
    fsdp = estimate_training(config("fsdp"), LLAMA_8B, gpu, ranks=4)
    items = by_what(fsdp)
    assert items["base weights, bf16, 1/4 (FSDP2 shard)"] == -(-one["base weights, bf16"] // 4)
    assert items["optimizer: AdamW (fp32), 1/4 (FSDP2 shard)"] * 4 == one["optimizer: AdamW (fp32)"]
    # root (embeddings + head, ~1.05 B params) and two layers (218 M each), bf16
    assert 2.7 * 2**30 < items["FSDP2: all-gathered units"] < 2.9 * 2**30
    ddp = estimate_training(config("ddp"), LLAMA_8B, gpu, ranks=4)
    assert fsdp.peak_bytes < ddp.peak_bytes


def test_preflight_suggests_more_ranks_with_fsdp_when_nothing_else_fits():
    # LoRA, one row of 256 tokens, on 6 GiB: QLoRA's 5.3 GiB of weights plus
    # the CUDA context do not fit (6.9 GiB); 8 FSDP2 ranks hold 5.9 GiB each.
    short = config(length=256, batch=1)
    with pytest.raises(DoesNotFit, match=r"try --nproc-per-node 8 --distributed fsdp"):
        check_fits_on(short, LLAMA_8B, "a 6 GiB GPU", 6 << 30)
