"""The config: YAML and flags fill one validated model; mistakes are one-line errors."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loraplex.cli import app
from loraplex.trainer.config import load_config
from loraplex.trainer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


def test_yaml_is_read_and_flags_override_it(tmp_path):
    path = write_yaml(
        tmp_path,
        "method: lora\ndata:\n  train: a.jsonl\n  max_length: 512\ntraining:\n  epochs: 2\n",
    )
    config = load_config(path, {"training.epochs": 5, "output.publish": "support-bot"})
    assert config.method == "lora"
    assert config.data.train == [Path("a.jsonl")]
    assert config.data.max_length == 512
    assert config.training.epochs == 5
    assert config.output.publish == "support-bot"
    assert config.output.run_dir == Path("runs/support-bot")


def test_unknown_key_is_refused_by_name(tmp_path):
    path = write_yaml(tmp_path, "data:\n  train: a.jsonl\ntraining:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"train.yaml: training.epochz: unknown setting"):
        load_config(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora.r": 12}, r"lora.r: rank 12 is not a vLLM rank slot"),
        ({"lora.r": 32}, r"lora.r=32 is above output.max_rank=16"),
        ({"method": "dora"}, r"method: Input should be 'qlora' or 'lora'"),
        ({"training.learning_rate": -1}, r"training.learning_rate: .*greater than 0"),
        ({"lora.target_modules": ["q_proj", "lm_head"]}, r"vLLM does not serve LoRA on lm_head"),
        ({"output.aliases": ["prod"]}, r"aliases need a name to publish under"),
        ({"output.publish": "Support Bot"}, r"invalid adapter name 'Support Bot'"),
        ({"data.eval_fraction": 0.1, "data.eval": ["e.jsonl"]}, r"not both"),
    ],
)
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"data.train": ["a.jsonl"], **overrides})


def test_missing_data_is_refused():
    with pytest.raises(ConfigError, match=r"data: required setting is missing"):
        load_config(None, {})


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))


def test_cli_reports_a_config_error_in_one_line_before_loading_anything(tmp_path):
    path = write_yaml(tmp_path, "data:\n  train: a.jsonl\nlora:\n  rank: 16\n")
    # A base model that does not exist: the config error must come first.
    result = CliRunner().invoke(
        app, ["train", "--config", str(path), "--base-model", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {path}: lora.rank: unknown setting"


def test_example_config_is_valid():
    config = load_config(REPO / "examples" / "train.yaml")
    assert config.method == "qlora"
    assert all((REPO / p).is_file() for p in config.data.train)


def test_the_all_linear_flag_means_every_linear_layer():
    # `--target-modules all-linear` arrives as a one-item list from the CLI.
    config = load_config(None, {"data.train": ["a.jsonl"], "lora.target_modules": ["all-linear"]})
    assert config.lora.target_modules == "all-linear"
