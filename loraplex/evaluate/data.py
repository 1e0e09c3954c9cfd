"""Held-out data: the trainer's JSONL formats and validation, rendered by the trainer's renderer.

Each record becomes an `EvalExample`: the whole conversation as token ids
with the trainer's labels (the assistant answers and their end-of-turn
token, through the base tokenizer's chat template), which the loss scores;
and the messages before the last trained answer, with that answer as the
reference, which generation metrics and the judge use. Bad records are
reported as `file:line: reason` and skipped, as in training.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from loraplex.evaluate.errors import EvalDataError
from loraplex.trainer.data import Problem, read_data_file
from loraplex.trainer.render import IGNORE, ChatRenderer, render_examples


@dataclass(frozen=True)
class EvalExample:
    source: str  # file:line
    messages: tuple[dict[str, str], ...]  # the prompt of the reference answer
    reference: str
    input_ids: tuple[int, ...]  # the whole conversation, rendered
    labels: tuple[int, ...]  # the token id where trained (the loss), else IGNORE
    prompt_tokens: int  # tokens before the reference answer

    @property
    def question(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""


@dataclass
class EvalData:
    path: Path
    sha256: str
    format: str
    records: int
    examples: list[EvalExample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def drop_longer_than(self, max_length: int) -> None:
        """Drop what the endpoint's context cannot hold, as problems (known only once
        the endpoint says its context length)."""
        kept = [e for e in self.examples if len(e.input_ids) <= max_length]
        self.problems += [
            Problem(e.source, f"{len(e.input_ids)} tokens, longer than the endpoint's {max_length}")
            for e in self.examples
            if len(e.input_ids) > max_length
        ]
        if not kept:
            raise EvalDataError(f"no example in {self.path} fits the endpoint's context")
        self.examples = kept


def load_eval_data(
    path: Path, tokenizer, max_length: int = sys.maxsize, fmt: str = "auto"
) -> EvalData:
    """Read, validate and render `path`; refuse a file with no usable example."""
    from loraplex.trainer.errors import TrainError

    try:
        data = read_data_file(Path(path), fmt)
        renderer = ChatRenderer(tokenizer)
        rendered, too_long, _ = render_examples(renderer, data.conversations, max_length, "drop")
    except TrainError as exc:
        raise EvalDataError(str(exc)) from None
    by_source = {c.source: c for c in data.conversations}
    examples = [_example(by_source[e.source], e) for e in rendered]
    problems = data.problems + too_long
    if not examples:
        raise EvalDataError(
            f"no valid example in {path} ({data.records} records, {len(problems)} invalid or "
            "too long)" + (f"; first: {problems[0]}" if problems else "")
        )
    return EvalData(Path(path), data.sha256, data.format, data.records, examples, problems)


def _example(conversation, example) -> EvalExample:
    messages = conversation.messages
    last = max(i for i, m in enumerate(messages) if m.trained)
    # The reference's tokens are the last run of labelled tokens.
    end = max(i for i, label in enumerate(example.labels) if label != IGNORE)
    start = end
    while start > 0 and example.labels[start - 1] != IGNORE:
        start -= 1
    return EvalExample(
        source=example.source,
        messages=tuple(m.as_template_input() for m in messages[:last]),
        reference=messages[last].content,
        input_ids=tuple(example.input_ids),
        labels=tuple(example.labels),
        prompt_tokens=start,
    )
