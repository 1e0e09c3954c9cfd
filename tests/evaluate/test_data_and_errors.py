"""Held-out data as the trainer sees it, and the mistakes that stop a run in one line
(no engine: the data file and the endpoint are checked before any work)."""

import pytest

from loraplex.cli import app
from loraplex.evaluate.data import load_eval_data
from loraplex.evaluate.errors import EvalDataError
from loraplex.trainer.render import ChatRenderer
from tests.evaluate.conftest import CHAT, write_jsonl
from tests.fixtures.engine import free_port
from tests.trainer.conftest import DATA


def test_examples_carry_the_trainers_tokens_and_labels(eval_tokenizer):
    from loraplex.trainer.data import read_data_file

    data = load_eval_data(CHAT, eval_tokenizer, max_length=1024)
    renderer = ChatRenderer(eval_tokenizer)
    trainer = [renderer.render(c) for c in read_data_file(CHAT).conversations]
    assert [list(e.input_ids) for e in data.examples] == [t.input_ids for t in trainer]
    assert [list(e.labels) for e in data.examples] == [t.labels for t in trainer]
    multi_turn = data.examples[2]  # "Name a fruit." / "Another one?" → "A pear."
    assert multi_turn.reference == "A pear." and multi_turn.question == "Another one?"
    assert [m["role"] for m in multi_turn.messages] == ["user", "assistant", "user"]
    prompt = eval_tokenizer.apply_chat_template(
        list(multi_turn.messages), tokenize=False, add_generation_prompt=True
    )
    assert multi_turn.prompt_tokens == len(eval_tokenizer(prompt, add_special_tokens=False)[0])


def test_bad_records_are_skipped_and_reported(eval_tokenizer):
    data = load_eval_data(DATA / "bad.jsonl", eval_tokenizer, max_length=1024)
    assert data.problems and all(":" in str(p) for p in data.problems)
    assert len(data.examples) + len(data.problems) == data.records


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "no valid example in"),
        (["not json"], "not JSON"),
        (['{"x": 1}'], "cannot tell the format"),
    ],
)
def test_a_file_with_nothing_usable_is_refused(eval_tokenizer, tmp_path, records, message):
    path = write_jsonl(tmp_path / "held-out.jsonl", records)
    with pytest.raises(EvalDataError, match=message):
        load_eval_data(path, eval_tokenizer, max_length=1024)


def one_line_error(cli, *args: str) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_an_endpoint_that_is_down_is_one_line(cli, tiny_model_dir):
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(
        cli, "eval", "--endpoint", url, "--model", "tiny", "--data", str(CHAT),
        "--base-model", str(tiny_model_dir), "--no-progress",
    )  # fmt: skip
    assert line.startswith(f"error: {url} is unreachable: cannot connect")


def test_usage_mistakes_are_one_line(cli, tiny_model_dir, tmp_path):
    base = ["eval", "--model", "tiny", "--base-model", str(tiny_model_dir), "--no-progress"]
    assert "unknown metric" in one_line_error(cli, *base, "--data", str(CHAT), "--metrics", "f1")
    assert "needs --judge-model" in one_line_error(
        cli, *base, "--data", str(CHAT), "--metrics", "judge"
    )
    assert "cannot read" in one_line_error(cli, *base, "--data", str(tmp_path / "missing.jsonl"))
    assert "invalid endpoint URL" in one_line_error(
        cli, *base, "--data", str(CHAT), "--endpoint", "localhost:8000"
    )
