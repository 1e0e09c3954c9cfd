"""The training and evaluation sets: files read, validated, rendered and split.

Everything here needs only the tokenizer, so a run with bad data stops (with
every problem reported as `file:line: reason`) before the model is loaded.
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from loraplex.trainer.config import DataSettings
from loraplex.trainer.data import DataFile, Problem, read_data_file
from loraplex.trainer.errors import DataError
from loraplex.trainer.render import ChatRenderer, Example, render_examples


@dataclass
class FileSummary:
    """What became of one file's records (recorded in the training record)."""

    path: str
    sha256: str
    format: str
    records: int
    invalid: int
    dropped: int
    truncated: int
    examples: int


@dataclass
class Datasets:
    train: list[Example]
    eval: list[Example]
    files: list[FileSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _read_and_render(
    paths, settings: DataSettings, renderer: ChatRenderer, summaries, problems, report
) -> list[Example]:
    examples: list[Example] = []
    for path in paths:
        data: DataFile = read_data_file(path, settings.format)
        rendered, too_long, counts = render_examples(
            renderer, data.conversations, settings.max_length, settings.too_long
        )
        for problem in data.problems + too_long:
            problems.append(problem)
            report(problem)
        examples += rendered
        summaries.append(
            FileSummary(
                path=str(path),
                sha256=data.sha256,
                format=data.format,
                records=data.records,
                invalid=len(data.problems) + counts["refused"],
                dropped=counts["dropped"],
                truncated=counts["truncated"],
                examples=len(rendered),
            )
        )
    return examples


def prepare_datasets(
    settings: DataSettings,
    tokenizer,
    seed: int,
    report: Callable[[Problem], None] = lambda problem: None,
) -> Datasets:
    """Read, validate and render train (and eval) data; refuse a run with nothing to train.

    `report` sees every problem as it is found, so they are all shown even when
    the run then stops for want of a valid example.
    """
    renderer = ChatRenderer(tokenizer)
    summaries: list[FileSummary] = []
    problems: list[Problem] = []
    read = partial(
        _read_and_render,
        settings=settings,
        renderer=renderer,
        summaries=summaries,
        problems=problems,
        report=report,
    )
    train = read(settings.train)
    if not train:
        raise DataError(_nothing_valid("training", summaries))
    eval_examples: list[Example] = []
    if settings.eval:
        before = len(summaries)
        eval_examples = read(settings.eval)
        if not eval_examples:
            raise DataError(_nothing_valid("evaluation", summaries[before:]))
    elif settings.eval_fraction:
        train, eval_examples = split(train, settings.eval_fraction, seed)
    return Datasets(train, eval_examples, summaries, problems)


def split(examples: list[Example], fraction: float, seed: int):
    """Hold out ⌈fraction·n⌉ examples (at least one), chosen by the seed."""
    held = max(1, math.ceil(fraction * len(examples)))
    if held >= len(examples):
        raise DataError(
            f"eval_fraction {fraction} of {len(examples)} examples leaves nothing to train on"
        )
    order = list(range(len(examples)))
    random.Random(f"{seed}:eval").shuffle(order)
    chosen = set(order[:held])
    train = [e for i, e in enumerate(examples) if i not in chosen]
    return train, [e for i, e in enumerate(examples) if i in chosen]


def _nothing_valid(kind: str, summaries: list[FileSummary]) -> str:
    names = ", ".join(s.path for s in summaries)
    records = sum(s.records for s in summaries)
    invalid = sum(s.invalid for s in summaries)
    dropped = sum(s.dropped for s in summaries)
    return (
        f"no valid {kind} example in {names} ({records} records: {invalid} invalid, "
        f"{dropped} too long)"
    )
