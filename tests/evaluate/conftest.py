"""Evaluation fixtures: the tiny model's tokenizer, an adapter trained by the trainer and
published into the session gateway's store, and the CLI runner."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.trainer.conftest import DATA, make_config

CHAT = DATA / "chat.jsonl"


@pytest.fixture(scope="session")
def eval_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, served_store, tmp_path_factory):
    """`evalbot@1`: LoRA (fp32) trained by the trainer on chat.jsonl, eval on the same file,
    published to the session gateway's store."""
    from loraplex.trainer.train import train

    run = tmp_path_factory.mktemp("evalbot") / "run"
    config = make_config(
        tiny_model_dir,
        run,
        data={"eval": [str(CHAT)]},
        training={"epochs": 8},
        output={"publish": "evalbot", "store": served_store.url},
    )
    return train(config, tiny_model_dir, progress=False)


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture(scope="session")
def cli() -> CliRunner:
    return CliRunner()
