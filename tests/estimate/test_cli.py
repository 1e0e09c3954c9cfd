"""`loraplex estimate train|serve`: the same flags as train and serve, a table or JSON, and
one-line errors; the pre-flight check's verdict and advice."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loraplex.cli import app
from loraplex.estimate.preflight import DoesNotFit, check_fits_on
from loraplex.trainer.config import load_config

LLAMA_8B = Path(__file__).parent / "data" / "llama-3.1-8b"
runner = CliRunner()


def test_estimate_train_takes_train_flags_and_prints_json(tiny_model_dir):
    result = runner.invoke(
        app,
        ["estimate", "train", "--base-model", str(tiny_model_dir), "--method", "lora",
         "--max-length", "512", "--batch-size", "2", "--no-gradient-checkpointing",
         "--device-memory", "24GiB", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.output)
    assert estimate["shapes"]["tokens"] == 1024 and estimate["shapes"]["source"] == "config"
    assert estimate["gradient_checkpointing"] is False
    assert estimate["peak_bytes"] == sum(item["bytes"] for item in estimate["items"])
    assert estimate["fits"] is True


def test_estimate_train_with_data_counts_tokens_and_estimates_time(tiny_model_dir):
    data = Path(__file__).parents[2] / "examples" / "data" / "pirate.jsonl"
    result = runner.invoke(
        app,
        ["estimate", "train", "--base-model", str(tiny_model_dir), "--data", str(data),
         "--device", "cpu", "--epochs", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "from the data" in result.output
    assert "time:" in result.output and "measured on this CPU" in result.output


def test_estimate_serve_prints_kv_capacity():
    result = runner.invoke(
        app,
        ["estimate", "serve", "--base-model", str(LLAMA_8B), "--quantization", "none",
         "--dtype", "bfloat16", "--max-model-len", "8192", "--gpu", "a100-80g"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "KV cache per token: 128.00 KiB" in result.output
    assert "sequences of 8,192 tokens" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--gpu", "abacus"], "unknown GPU 'abacus'"),
        (["train", "--device-memory", "lots"], "cannot read memory size 'lots'"),
        (["train", "--lora-r", "12"], "rank 12 is not a vLLM rank slot"),
        (["serve", "--quantization", "magic"], "no estimate for quantization 'magic'"),
    ],
)
def test_a_users_mistake_is_one_line(tiny_model_dir, args, message):
    result = runner.invoke(app, ["estimate", *args, "--base-model", str(tiny_model_dir)])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {result.output.strip().removeprefix('error: ')}"
    assert message in result.output and "Traceback" not in result.output


def test_preflight_stops_with_the_change_that_fits():
    config = load_config(
        None,
        {"base_model": str(LLAMA_8B), "method": "lora", "data.train": ["unused.jsonl"],
         "data.max_length": 2048, "training.batch_size": 2},
    )  # fmt: skip
    with pytest.raises(DoesNotFit, match=r"12.00 GiB free: try --method qlora") as caught:
        check_fits_on(config, LLAMA_8B, "a 12 GiB GPU", 12 << 30)
    assert "peak per device" in str(caught.value)  # the estimate comes with it
    check_fits_on(config, LLAMA_8B, "A100 80GB", 80 << 30)  # fits: no error
