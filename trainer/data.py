"""Training data: JSONL files in three formats, validated record by record.

Every format becomes the same value, a `Conversation` of system/developer/
user/assistant messages, so one renderer (render.py) applies the base model's own
chat template to all of them:

- chat (OpenAI's fine-tuning format): `{"messages": [{"role", "content",
  "weight"?}, ...]}`, content a string or a list of text parts (joined with
  newlines, as vLLM joins them when serving); an assistant message with
  `"weight": 0` is shown to the model but not trained on. Neither is an
  assistant message that opens the conversation: with nothing before it there
  is no prompt it answers, and a served chat request always has one, so it is
  kept as context only.
- prompt-completion: `{"prompt": ..., "completion": ...}` → user, assistant.
- alpaca: `{"instruction", "input"?, "output"}` → user (instruction, then
  input), assistant (output).

A bad record never stops the reading: it becomes a `Problem` ("file:line:
reason") and the rest is kept; the recipe decides what to do with them.
Lines are split on "\n" alone (JSONL), never on the other characters
Python's `splitlines` treats as breaks (U+2028 may stand inside a string),
and each is decoded on its own: a line that is not UTF-8 is one bad record.
A UTF-8 byte order mark at the start of the file (Windows editors and
PowerShell write one) is no part of the first record; a gzip-compressed
file is refused as such.
"""

import codecs
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraplex.trainer.errors import DataError

ROLES = ("system", "developer", "user", "assistant")
GZIP_MAGIC = b"\x1f\x8b"
UNSUPPORTED_RECORD_KEYS = ("tools", "functions")
UNSUPPORTED_MESSAGE_KEYS = ("tool_calls", "function_call", "tool_call_id")


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    trained: bool = False  # only assistant messages are ever trained

    def as_template_input(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    source: str  # "file:line", for every message about this record


@dataclass(frozen=True)
class Problem:
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class DataFile:
    """One JSONL file, read and validated."""

    path: Path
    format: str
    sha256: str
    records: int = 0
    conversations: list[Conversation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class RecordError(ValueError):
    """Why one record is unusable; becomes a `Problem` with its file:line."""


def parse_chat(record: dict[str, Any]) -> tuple[Message, ...]:
    for key in UNSUPPORTED_RECORD_KEYS:
        if key in record:
            raise RecordError(f"'{key}' is not supported (no tool calling)")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' must be a non-empty list")
    parsed = tuple(_parse_message(i, m) for i, m in enumerate(messages, start=1))
    if any(m.role == "system" for m in parsed[1:]):
        raise RecordError("a system message may only come first")
    if not any(m.role == "assistant" for m in parsed):
        raise RecordError("no assistant message")
    if parsed[0].trained:  # an opening answer answers nothing: context, not a target
        parsed = (Message("assistant", parsed[0].content), *parsed[1:])
        if not any(m.trained for m in parsed):
            raise RecordError(
                "the only assistant answer opens the conversation: nothing to train on "
                "(an answer is trained only after a system, developer or user message)"
            )
    if not any(m.trained for m in parsed):
        raise RecordError("every assistant message has weight 0: nothing to train on")
    return parsed


def _parse_message(index: int, message: Any) -> Message:
    where = f"message {index}"
    if not isinstance(message, dict):
        raise RecordError(f"{where} is not an object")
    role = message.get("role")
    if role not in ROLES:
        raise RecordError(f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
    for key in UNSUPPORTED_MESSAGE_KEYS:
        if key in message:
            raise RecordError(f"{where} has '{key}': tool calls are not supported")
    content = _content_text(message.get("content"), f"{where} ({role})")
    _check_unicode(content, f"{where} ({role}) content")
    weight = message.get("weight", 1)
    if "weight" in message and role != "assistant":
        raise RecordError(f"{where} ({role}) has a weight; only assistant messages take one")
    if weight not in (0, 1) or isinstance(weight, bool):
        raise RecordError(f"{where} has weight {weight!r}; expected 0 or 1")
    if role == "assistant" and not content.strip():
        raise RecordError(f"{where} is an empty assistant answer")
    return Message(role, content, trained=role == "assistant" and weight == 1)


def _content_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or OpenAI's list of text parts
    joined with newlines, as vLLM's chat renderer joins them when serving."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise RecordError(f"{where} content must be a string or a list of text parts")
    texts = []
    for number, part in enumerate(content, start=1):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind != "text":
            raise RecordError(
                f"{where} content part {number} is {kind!r}; only text parts are supported"
            )
        if not isinstance(part.get("text"), str):
            raise RecordError(f"{where} content part {number}: 'text' must be a string")
        texts.append(part["text"])
    return "\n".join(texts)


def parse_prompt_completion(record: dict[str, Any]) -> tuple[Message, ...]:
    prompt, completion = _text(record, "prompt"), _text(record, "completion")
    if not completion.strip():
        raise RecordError("empty completion")
    return (Message("user", prompt), Message("assistant", completion, trained=True))


def parse_alpaca(record: dict[str, Any]) -> tuple[Message, ...]:
    instruction, output = _text(record, "instruction"), _text(record, "output")
    extra = _text(record, "input", required=False)
    if not instruction.strip():
        raise RecordError("empty instruction")
    if not output.strip():
        raise RecordError("empty output")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return (Message("user", prompt), Message("assistant", output, trained=True))


def _text(record: dict[str, Any], key: str, required: bool = True) -> str:
    if key not in record:
        if required:
            raise RecordError(f"missing field '{key}'")
        return ""
    if not isinstance(record[key], str):
        raise RecordError(f"field '{key}' must be a string")
    _check_unicode(record[key], f"field '{key}'")
    return record[key]


def _check_unicode(text: str, what: str) -> None:
    """JSON's \\ud800 escapes decode to lone surrogates, which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{what} holds a lone surrogate (an invalid \\uXXXX escape)") from None


PARSERS: dict[str, Callable[[dict[str, Any]], tuple[Message, ...]]] = {
    "chat": parse_chat,
    "prompt-completion": parse_prompt_completion,
    "alpaca": parse_alpaca,
}


def detect_format(record: dict[str, Any]) -> str | None:
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


def read_data_file(path: Path, fmt: str = "auto") -> DataFile:
    """Read and validate one JSONL file; bad records become `problems`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith(GZIP_MAGIC):  # else every line is "not UTF-8", which hides why
        raise DataError(f"{path} is gzip-compressed: decompress it first (gunzip {path})")
    result = DataFile(path=path, format=fmt, sha256=hashlib.sha256(raw).hexdigest())
    lines = raw.removeprefix(codecs.BOM_UTF8).split(b"\n")
    for number, raw_line in enumerate(lines, start=1):
        if not raw_line.strip():
            continue
        result.records += 1
        source = f"{path}:{number}"
        try:
            record = _json_object(_decoded(raw_line))
            if result.format == "auto":
                result.format = _detected(record, path)
            messages = PARSERS[result.format](record)
        except RecordError as exc:
            result.problems.append(Problem(source, str(exc)))
            continue
        result.conversations.append(Conversation(messages, source))
    return result


def _decoded(line: bytes) -> str:
    """One line as text; a line that is not UTF-8 is that record's problem, not the file's."""
    try:
        return line.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{line[exc.start]:02x} at byte {exc.start + 1}"
        raise RecordError(f"not UTF-8 text ({where})") from None


def _json_object(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    return record


def _detected(record: dict[str, Any], path: Path) -> str:
    fmt = detect_format(record)
    if fmt is None:
        keys = ", ".join(sorted(record)) or "none"
        raise DataError(
            f"cannot tell the format of {path} from its first record (keys: {keys}); "
            "expected 'messages', 'prompt'+'completion' or 'instruction'+'output', "
            "or name it with --format"
        )
    return fmt


def read_data_files(paths: list[Path], fmt: str = "auto") -> list[DataFile]:
    return [read_data_file(p, fmt) for p in paths]
