"""Trainer fixtures: the tiny model's tokenizer, example data, configs for short runs."""

import json
import shutil
from pathlib import Path

import pytest

from loraplex.trainer.config import TrainConfig

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path):
    from loraplex.trainer.model import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tokenizer_only_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The tiny model's tokenizer and config without its weights: loading the model fails."""
    out = tmp_path_factory.mktemp("tokenizer-only")
    for path in tiny_model_dir.iterdir():
        if not path.name.endswith(".safetensors"):
            shutil.copy(path, out / path.name)
    return out


def write_jsonl(path: Path, records: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def chat(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def make_config(base_model: Path, run_dir: Path, **sections) -> TrainConfig:
    """A short run on the tiny model; `sections` override whole settings per section."""
    raw = {
        "base_model": str(base_model),
        "method": "lora",
        "data": {"train": [str(DATA / "chat.jsonl")], "max_length": 256},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {"epochs": 4, "batch_size": 2, "learning_rate": 2e-3, "warmup_ratio": 0.0},
        "output": {"dir": str(run_dir), "tensorboard": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw[section] = {**raw.get(section, {}), **values}
        else:
            raw[section] = values
    return TrainConfig.model_validate(raw)
