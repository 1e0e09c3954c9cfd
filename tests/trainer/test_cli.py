"""`loraplex train` on the command line: flags, --show-example, one-line errors."""

from typer.testing import CliRunner

from loraplex.cli import app
from tests.trainer.conftest import DATA, write_jsonl


def invoke(*args: str):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def test_show_example_prints_the_rendered_example_and_trains_nothing(tiny_model_dir, tmp_path):
    result = invoke(
        "--base-model", tiny_model_dir, "--data", DATA / "alpaca.jsonl",
        "--output", tmp_path / "run", "--show-example",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "<|im_start|>user\nTranslate to French.\n\nGood morning<|im_end|>\n" in result.output
    assert "<|im_start|>assistant\n[[Bonjour<|im_end|>]]\n" in result.output
    assert not (tmp_path / "run").exists()


def test_bad_data_lists_every_problem_and_exits_1(tiny_model_dir, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json", {"prompt": "q", "completion": ""}])
    result = invoke("--base-model", tiny_model_dir, "--data", bad, "--format", "prompt-completion")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert f"{bad}:1: not JSON (Expecting value at column 1)" in lines
    assert f"{bad}:2: empty completion" in lines
    assert (
        lines[-1] == f"error: no valid training example in {bad} (2 records: 2 invalid, 0 too long)"
    )
    assert "Traceback" not in result.output


def test_flags_train_and_print_the_adapter_dir(tiny_model_dir, tmp_path):
    result = invoke(
        "--base-model", tiny_model_dir, "--data", DATA / "prompt_completion.jsonl",
        "--method", "lora", "--epochs", 1, "--lora-r", 8, "--output", tmp_path / "run",
        "--no-progress", "--no-packing",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(tmp_path / "run" / "adapter")
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"r": 8' in config and '"packing": false' in config
