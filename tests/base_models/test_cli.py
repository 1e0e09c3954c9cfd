"""`loraplex make-tiny-model` and `loraplex make-model` from the command line."""

from typer.testing import CliRunner

from loraplex.cli import app

runner = CliRunner()


def test_make_tiny_model_writes_the_same_bytes_as_the_fixture(tiny_model_dir, tmp_path):
    result = runner.invoke(app, ["make-tiny-model", str(tmp_path / "tiny")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "tiny")
    for path in tiny_model_dir.iterdir():
        assert (tmp_path / "tiny" / path.name).read_bytes() == path.read_bytes(), path.name


def test_make_tiny_model_takes_a_seed(tiny_model_dir, tmp_path):
    result = runner.invoke(app, ["make-tiny-model", str(tmp_path / "tiny"), "--seed", "7"])
    assert result.exit_code == 0, result.output
    weights = "model.safetensors"
    assert (tmp_path / "tiny" / weights).read_bytes() != (tiny_model_dir / weights).read_bytes()


def test_make_model_prepares_a_known_model(tmp_path):
    result = runner.invoke(app, ["make-model", "tiny", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "config.json").is_file()


def test_make_model_with_an_unknown_name_is_one_line_and_exit_1(tmp_path):
    result = runner.invoke(app, ["make-model", "gpt-9", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: unknown base model 'gpt-9'; known: tiny, smollm2-135m-instruct\n"
    )
    assert not (tmp_path / "m").exists()


def test_make_tiny_model_into_an_unwritable_place_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    result = runner.invoke(app, ["make-tiny-model", str(tmp_path / "a-file" / "tiny")])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot write {tmp_path / 'a-file' / 'tiny'}: ")
