"""The training estimate against a real run's live peak (the tiny model, LoRA and QLoRA).

The run is bench_trainer's memory pass: a real `loraplex.trainer.train` in a
fresh process with glibc mapping every buffer of 128 KiB or more on its own,
so that peak RSS follows the live tensors (bench/bench_estimate.py `measure`).
"""

from pathlib import Path

import pytest

from bench.bench_estimate import measure, predict
from bench.bench_trainer import make_dataset


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_training_estimate_is_within_15_percent_of_the_measured_live_peak(
    method: str, tiny_model_dir: Path, tmp_path: Path
):
    # QLoRA too: its run sees a new micro-batch length nearly every step, and
    # its memory must not grow with them (trainer/model.py's base_dtype).
    from loraplex.trainer.model import load_tokenizer

    data = tmp_path / "data.jsonl"
    make_dataset(load_tokenizer(tiny_model_dir), 24, 256, data)
    spec = dict(
        model_dir=str(tiny_model_dir), data=str(data), method=method, length=256, batch=2,
        ckpt=True,
    )  # fmt: skip
    estimate = predict(spec)
    measured = measure(spec, live=True)
    assert measured["steps"] >= 2  # the optimizer's states exist at the measured peak
    ratio = estimate.peak_bytes / measured["peak_memory_bytes"]
    assert abs(ratio - 1) <= 0.15, (estimate.peak_bytes, measured["peak_memory_bytes"])
