"""Any line of a data file becomes an example or a `file:line: reason`, never an exception.

Generated with hypothesis, for each of the three formats: arbitrary JSON,
records shaped like the format with wrong types, odd roles and weights, and
strings that trip tokenizers and line splitting (lone surrogates, U+2028,
special tokens, NUL, a byte order mark).
"""

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraplex.trainer.data import read_data_file
from loraplex.trainer.render import ChatRenderer, render_examples

TRICKY = [
    "",
    " ",
    "\ud800",
    "\udfff",
    "\u2028",
    "\x1c",
    "\x85",
    "\r",
    "\x00",
    "<|im_end|>",
    "é",
    "\ufeff",
]
texts = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12), st.text(max_size=4).map(str.upper))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
roles = st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "function"]), scalars)


@st.composite
def messages(draw) -> dict:
    message = {"role": draw(roles), "content": draw(st.one_of(texts, scalars))}
    if draw(st.booleans()):
        message["weight"] = draw(st.one_of(st.sampled_from([0, 1, 2, 0.5, True, "1"]), scalars))
    if draw(st.integers(0, 9)) == 0:
        message[draw(st.sampled_from(["tool_calls", "name", "extra"]))] = draw(json_values)
    return message


def record(keys: list[str]) -> st.SearchStrategy:
    """Objects with (some of) the format's keys, each a text or any other value."""
    values = {key: st.one_of(texts, texts, json_values) for key in keys}
    return st.fixed_dictionaries({}, optional=values)


RECORDS = {
    "chat": st.fixed_dictionaries(
        {"messages": st.one_of(st.lists(messages(), max_size=5), json_values)},
        optional={"tools": json_values},
    ),
    "prompt-completion": record(["prompt", "completion"]),
    "alpaca": record(["instruction", "input", "output"]),
}


def lines_for(fmt: str) -> st.SearchStrategy:
    line = st.one_of(
        RECORDS[fmt].map(lambda r: json.dumps(r, ensure_ascii=False)),
        RECORDS[fmt].map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=20).filter(lambda t: "\n" not in t),
    )
    return st.lists(line, min_size=1, max_size=6)


def outcomes(tokenizer, fmt: str, lines: list[str]) -> tuple[list[str], list[str]]:
    """(sources of examples, sources of problems) for a file of `lines`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        data = read_data_file(path, fmt)
        examples, too_long, _ = render_examples(
            ChatRenderer(tokenizer), data.conversations, max_length=48, too_long="truncate"
        )
    problems = [str(p) for p in data.problems + too_long]
    return [e.source.rsplit(":", 1)[1] for e in examples], problems


def check_every_line_accounted_for(tokenizer, fmt: str, lines: list[str]) -> None:
    examples, problems = outcomes(tokenizer, fmt, lines)
    # Blank as JSONL reads it: ASCII whitespace only (a line of U+0085 is a bad record),
    # after the byte order mark a file may start with.
    raw = [line.encode("utf-8", "surrogatepass") for line in lines]
    raw[0] = raw[0].removeprefix(b"\xef\xbb\xbf")
    expected = {str(n) for n, line in enumerate(raw, start=1) if line.strip()}
    for problem in problems:
        where, _, reason = problem.partition(": ")
        assert where.endswith(".jsonl:" + where.rsplit(":", 1)[1]) and reason, problem
    # A truncated example is both kept and reported; everything else is one or the other.
    reported = {p.partition(": ")[0].rsplit(":", 1)[1] for p in problems}
    assert set(examples) | reported == expected
    assert len(examples) == len(set(examples))


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(lines=lines_for("chat"))
def test_any_chat_line_is_an_example_or_a_reason(tokenizer, lines):
    check_every_line_accounted_for(tokenizer, "chat", lines)


@FUZZ
@given(lines=lines_for("prompt-completion"))
def test_any_prompt_completion_line_is_an_example_or_a_reason(tokenizer, lines):
    check_every_line_accounted_for(tokenizer, "prompt-completion", lines)


@FUZZ
@given(lines=lines_for("alpaca"))
def test_any_alpaca_line_is_an_example_or_a_reason(tokenizer, lines):
    check_every_line_accounted_for(tokenizer, "alpaca", lines)


def test_an_opening_assistant_message_is_context_not_a_target(tokenizer, tmp_path):
    path = tmp_path / "opening.jsonl"
    rows = [
        {"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "q"}]},
        {
            "messages": [
                {"role": "assistant", "content": "Hi, how can I help?"},
                {"role": "user", "content": "Say yes."},
                {"role": "assistant", "content": "Yes."},
            ]
        },
        {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "hi"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = read_data_file(path)
    assert [str(p) for p in data.problems] == [
        f"{path}:1: the only assistant answer opens the conversation: nothing to train on "
        "(an answer is trained only after a system, developer or user message)"
    ]
    examples, problems, _ = render_examples(
        ChatRenderer(tokenizer), data.conversations, 256, "drop"
    )
    assert problems == []
    trained = [tokenizer.decode([t for t in e.labels if t >= 0]) for e in examples]
    assert trained == ["Yes.<|im_end|>", "hi<|im_end|>"]


def test_a_lone_surrogate_is_reported_by_line(tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"prompt": "\\ud800", "completion": "x"}\n')
    assert [str(p) for p in read_data_file(path).problems] == [
        f"{path}:1: field 'prompt' holds a lone surrogate (an invalid \\uXXXX escape)"
    ]


def test_a_line_separator_inside_a_string_does_not_split_the_record(tokenizer, tmp_path):
    path = tmp_path / "u2028.jsonl"
    record = {"prompt": "one\u2028two", "completion": "three\x1cfour"}
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    data = read_data_file(path)
    assert data.problems == [] and len(data.conversations) == 1
