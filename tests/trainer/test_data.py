"""Data files: three formats, detected per file, every bad record reported as file:line."""

import gzip
import json
import re

import pytest

from loraplex.trainer.config import DataSettings
from loraplex.trainer.data import Message, read_data_file
from loraplex.trainer.dataset import prepare_datasets
from loraplex.trainer.errors import DataError
from tests.trainer.conftest import DATA, chat, write_jsonl


def test_chat_format_keeps_roles_and_honours_weight_zero():
    data = read_data_file(DATA / "chat.jsonl")
    assert data.format == "chat"
    assert data.records == len(data.conversations) == 6
    assert not data.problems
    fruit = data.conversations[2].messages
    assert [(m.role, m.trained) for m in fruit] == [
        ("user", False),
        ("assistant", False),  # "weight": 0
        ("user", False),
        ("assistant", True),
    ]
    assert data.conversations[0].source == f"{DATA / 'chat.jsonl'}:1"


def test_a_developer_message_is_read_as_openai_writes_it(tmp_path):
    developer = {"role": "developer", "content": "Answer like a pirate."}
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"messages": [developer, *chat("q", "a")["messages"]]}]
    )
    data = read_data_file(path)
    assert not data.problems
    assert [(m.role, m.trained) for m in data.conversations[0].messages] == [
        ("developer", False),
        ("user", False),
        ("assistant", True),
    ]


def test_alpaca_and_prompt_completion_become_user_assistant_turns():
    alpaca = read_data_file(DATA / "alpaca.jsonl")
    assert alpaca.format == "alpaca"
    assert alpaca.conversations[0].messages == (
        Message("user", "Translate to French.\n\nGood morning"),
        Message("assistant", "Bonjour", trained=True),
    )
    assert alpaca.conversations[2].messages[0] == Message("user", "Say hello.")  # empty input
    completion = read_data_file(DATA / "prompt_completion.jsonl")
    assert completion.format == "prompt-completion"
    assert completion.conversations[1].messages == (
        Message("user", "Water freezes at"),
        Message("assistant", "zero degrees Celsius.", trained=True),
    )


def test_every_bad_record_is_reported_with_file_and_line():
    path = DATA / "bad.jsonl"
    data = read_data_file(path)
    assert len(data.conversations) == 1
    assert [str(p) for p in data.problems] == [
        f"{path}:2: not JSON (Expecting value at column 1)",
        f"{path}:3: no assistant message",
        f"{path}:4: message 2 has role 'tool'; expected one of system, developer, user, assistant",
        f"{path}:5: message 2 is an empty assistant answer",
        f"{path}:6: expected a JSON object, got list",
        f"{path}:7: every assistant message has weight 0: nothing to train on",
        f"{path}:8: 'messages' must be a non-empty list",
    ]


def test_a_file_saved_with_a_byte_order_mark_and_crlf_keeps_every_record(tmp_path):
    """Windows editors and PowerShell save UTF-8 with a BOM and CRLF line ends."""
    lines = [json.dumps(chat(f"question {i}", f"answer {i}")) for i in range(3)]
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    data = read_data_file(path)
    assert data.format == "chat" and not data.problems
    assert [c.messages[0].content for c in data.conversations] == [
        f"question {i}" for i in range(3)
    ]
    assert data.conversations[0].source == f"{path}:1"


def test_a_gzip_compressed_file_is_refused_as_such(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps(chat("q", "a")).encode() + b"\n"))
    with pytest.raises(DataError, match=r"data.jsonl.gz is gzip-compressed: decompress it first"):
        read_data_file(path)


def test_content_given_as_text_parts_is_their_text_joined_by_newlines(tmp_path):
    """OpenAI's chat format allows content as a list of parts; text parts are read
    as vLLM renders them when serving, any other part is that record's problem."""
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    records = [
        {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": parts}]},
        {
            "messages": [
                {"role": "user", "content": [parts[0], image]},
                chat("q", "a")["messages"][1],
            ]
        },
        {"messages": [{"role": "user", "content": []}, chat("q", "a")["messages"][1]]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    ]
    data = read_data_file(write_jsonl(tmp_path / "parts.jsonl", records))
    assert [m.content for m in data.conversations[0].messages] == ["first\nsecond"] * 2
    assert [p.reason for p in data.problems] == [
        "message 1 (user) content part 2 is 'image_url'; only text parts are supported",
        "message 1 (user) content must be a string or a list of text parts",
        "message 1 (user) content part 1: 'text' must be a string",
    ]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"prompt": "a"}, "missing field 'completion'"),
        ({"prompt": "a", "completion": "  "}, "empty completion"),
        ({"prompt": 1, "completion": "b"}, "field 'prompt' must be a string"),
    ],
)
def test_prompt_completion_problems(tmp_path, record, reason):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}, record])
    data = read_data_file(path, "prompt-completion")
    assert [str(p) for p in data.problems] == [f"{path}:2: {reason}"]


def test_chat_problems_name_the_message(tmp_path):
    user, answer = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    records = [
        {"messages": [user, {"role": "assistant", "content": 3}]},
        {"messages": [{**user, "weight": 1}, answer]},
        {"messages": [user, {**answer, "weight": 2}]},
        {"messages": [user, {"role": "system", "content": "s"}, answer]},
        {"messages": [user, answer], "tools": []},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    reasons = [p.reason for p in read_data_file(path, "chat").problems]
    assert reasons == [
        "message 2 (assistant) content must be a string or a list of text parts",
        "message 1 (user) has a weight; only assistant messages take one",
        "message 2 has weight 2; expected 0 or 1",
        "a system message may only come first",
        "'tools' is not supported (no tool calling)",
    ]


def test_format_is_detected_per_file_and_can_be_named(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"cannot tell the format of .*odd.jsonl.*--format"):
        read_data_file(path)
    named = read_data_file(DATA / "chat.jsonl", "alpaca")  # wrong name: every record fails
    assert [p.reason for p in named.problems][:1] == ["missing field 'instruction'"]


def test_too_long_examples_are_dropped_or_truncated_with_counts(tmp_path, tokenizer):
    long_answer = "word " * 200
    path = write_jsonl(tmp_path / "d.jsonl", [chat("q", "short"), chat("q", long_answer)])
    for too_long, kept, counts in (("drop", 1, (1, 0)), ("truncate", 2, (0, 1))):
        settings = DataSettings(train=[path], max_length=64, too_long=too_long)
        data = prepare_datasets(settings, tokenizer, seed=0)
        assert len(data.train) == kept
        summary = data.files[0]
        assert (summary.dropped, summary.truncated) == counts
        action = "dropped" if too_long == "drop" else "truncated"
        assert len(data.problems) == 1
        assert re.fullmatch(
            rf"{path}:2: \d+ tokens, longer than max_length 64: {action}", str(data.problems[0])
        )
        assert all(len(e) <= 64 for e in data.train)


def test_eval_fraction_holds_out_examples_by_seed(tokenizer):
    settings = DataSettings(train=[DATA / "chat.jsonl"], eval_fraction=0.3)
    first = prepare_datasets(settings, tokenizer, seed=0)
    again = prepare_datasets(settings, tokenizer, seed=0)
    assert (len(first.train), len(first.eval)) == (4, 2)
    assert [e.source for e in first.eval] == [e.source for e in again.eval]
    assert not {e.source for e in first.eval} & {e.source for e in first.train}


def test_no_valid_example_stops_before_the_model_loads(tmp_path, tokenizer_only_dir):
    from loraplex.trainer.train import train
    from tests.trainer.conftest import make_config

    path = write_jsonl(tmp_path / "all-bad.jsonl", ["{", {"messages": []}])
    config = make_config(tokenizer_only_dir, tmp_path / "run", data={"train": [str(path)]})
    # The base has no weights: reaching the model loading would fail differently.
    with pytest.raises(DataError, match=r"no valid training example in .*all-bad.jsonl "):
        train(config, tokenizer_only_dir, progress=False)
    assert not (tmp_path / "run").exists()
