"""The evaluation recipe: endpoint → data → per model (loss, answers) → judge → figures.

- Every model answers every example, one model after another, each with
  `concurrency` requests in flight, so answers/s is each model's own rate.
- A request that fails (timeout, HTTP error, a response without what was
  asked) is counted against its model and metric with its reason; the run
  goes on. Figures are made from what was answered.
- Interrupted (Ctrl-C), the run returns what it has measured, marked
  `partial`, so the caller can still write it.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import openai
from tqdm.auto import tqdm

from loraplex.evaluate.bootstrap import bootstrap
from loraplex.evaluate.data import EvalData, EvalExample, load_eval_data
from loraplex.evaluate.endpoint import EndpointInfo, make_client, open_endpoint, request_error
from loraplex.evaluate.judge import JudgeSettings, Verdict, ask, combine
from loraplex.evaluate.requests import BadResponse, answer_loss, greedy_answer
from loraplex.evaluate.results import DataSummary, EvalReport, Figure, JudgeFigure, ModelResult
from loraplex.evaluate.scores import GENERATION_METRICS, JUDGE, LOSS, METRICS, ROWS

MAX_ERRORS = 3  # distinct failure reasons kept per figure
DEFAULT_CONTEXT = 2048
PROBE_TIMEOUT = 60.0  # when the endpoint does not say its context length


@dataclass(frozen=True)
class EvalSettings:
    endpoint: str
    models: list[str]
    data: Path
    metrics: tuple[str, ...]
    api_key: str | None = None
    concurrency: int = 8
    max_tokens: int = 256
    timeout: float = 300.0
    judge: JudgeSettings | None = None
    progress: bool = True
    data_format: str = "auto"
    served_as: dict[str, str] = field(default_factory=dict)  # model → name@N to ask for


@dataclass
class Outcome:
    """Per-example results of one kind of request: values, or None with a reason."""

    values: list = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(e is not None for e in self.errors)

    def reasons(self) -> list[str]:
        return list(dict.fromkeys(e for e in self.errors if e))[:MAX_ERRORS]


def evaluate(settings: EvalSettings, tokenizer) -> EvalReport:
    """Run the evaluation; a Ctrl-C returns the partial report instead of raising."""
    return asyncio.run(_evaluate(settings, tokenizer))


async def _evaluate(s: EvalSettings, tokenizer) -> EvalReport:
    started = datetime.now(UTC)
    data = load_eval_data(s.data, tokenizer, fmt=s.data_format)  # before any request
    client = make_client(s.endpoint, s.api_key, s.timeout)
    asked = [s.served_as.get(m, m) for m in s.models]
    info = await open_endpoint(client, asked, s.api_key)
    judge = await _open_judge(s.judge) if JUDGE in s.metrics else None
    data.drop_longer_than((info.max_model_len or DEFAULT_CONTEXT) - 1)
    report = _new_report(s, info, data, started, judge)
    bar = tqdm(total=_planned(s, data), desc="eval", unit="req", disable=not s.progress)
    try:
        for model, served in zip(s.models, asked, strict=True):
            result = ModelResult(model=model, served_as=served)
            report.models.append(result)
            await _measure_model(s, client, info, data.examples, result, bar)
        if judge is not None:
            await _judge_all(s, judge, data.examples, report, bar)
        report.partial = False
    except asyncio.CancelledError:  # Ctrl-C under asyncio.run: keep what was measured
        pass
    finally:
        bar.close()
        report.finished_at = datetime.now(UTC)
    return report


def _new_report(s, info: EndpointInfo, data: EvalData, started, judge) -> EvalReport:
    return EvalReport(
        started_at=started,
        endpoint=info.url,
        server=info.server,
        base_model=info.base_model,
        quantization=info.quantization,
        data=DataSummary(
            path=str(data.path),
            sha256=data.sha256,
            format=data.format,
            records=data.records,
            examples=len(data.examples),
            problems=[str(p) for p in data.problems],
        ),
        metrics=list(s.metrics),
        concurrency=s.concurrency,
        max_tokens=s.max_tokens,
        judge=None if judge is None else {**judge[2], "model": s.judge.model},
        sources=[e.source for e in data.examples],
    )


def _planned(s: EvalSettings, data: EvalData) -> int:
    n = len(data.examples)
    per_model = n * (LOSS in s.metrics) + n * _needs_answers(s)
    judged = 2 * n * (len(s.models) - 1) if JUDGE in s.metrics else 0
    return per_model * len(s.models) + judged


def _needs_answers(s: EvalSettings) -> bool:
    return any(m in s.metrics for m in (*GENERATION_METRICS, JUDGE))


async def pool(items: list, work: Callable[..., Awaitable], concurrency: int, bar) -> Outcome:
    """`work(item)` for every item, `concurrency` at a time, in order; failures counted."""
    outcome = Outcome([None] * len(items), [None] * len(items))
    queue = iter(enumerate(items))

    async def worker() -> None:
        for index, item in queue:
            try:
                outcome.values[index] = await work(item)
            except (openai.APIError, BadResponse) as exc:
                outcome.errors[index] = (
                    request_error(exc) if isinstance(exc, openai.APIError) else str(exc)
                )
            bar.update(1)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    return outcome


async def _measure_model(s, client, info, examples: list[EvalExample], result, bar) -> None:
    model = result.served_as
    if LOSS in s.metrics:
        bar.set_description(f"{result.model}: loss")
        losses = await pool(examples, lambda e: answer_loss(client, model, e), s.concurrency, bar)
        rows = [v for v in losses.values if v is not None]
        result.metrics[LOSS] = _figure(LOSS, rows, losses)
    if not _needs_answers(s):
        return
    bar.set_description(f"{result.model}: answers")
    context = info.max_model_len or DEFAULT_CONTEXT

    def answer(e: EvalExample):
        budget = max(1, min(s.max_tokens, context - e.prompt_tokens))
        return greedy_answer(client, model, e, budget)

    started = time.perf_counter()
    answers = await pool(examples, answer, s.concurrency, bar)
    seconds = time.perf_counter() - started
    result.answers = [v[0] if v else None for v in answers.values]
    result.answer_tokens = [v[1] if v else None for v in answers.values]
    answered = [(a, e) for a, e in zip(result.answers, examples, strict=True) if a is not None]
    result.answers_per_s = round(len(answered) / seconds, 3) if answered else None
    for metric in GENERATION_METRICS:
        if metric in s.metrics:
            rows = [ROWS[metric](a, e.reference) for a, e in answered]
            result.metrics[metric] = _figure(metric, rows, answers)


def _figure(metric: str, rows: list, outcome: Outcome) -> Figure:
    interval = bootstrap(np.asarray(rows), METRICS[metric].statistic)
    figure = Figure(n=len(rows), failed=outcome.failed, errors=outcome.reasons())
    if interval is not None:
        figure.value, figure.low, figure.high = interval.value, interval.low, interval.high
    return figure


async def _open_judge(settings: JudgeSettings | None):
    from loraplex.evaluate.errors import EvalError

    if settings is None:
        raise EvalError("the judge metric needs --judge-model (and --judge-endpoint)")
    # The probe gets the usual patience: --judge-timeout bounds each verdict, and a
    # verdict that takes longer is counted as failed, not a reason to stop.
    probe = make_client(settings.endpoint, settings.api_key, max(settings.timeout, PROBE_TIMEOUT))
    info = await open_endpoint(probe, [settings.model], settings.api_key)
    client = make_client(settings.endpoint, settings.api_key, settings.timeout)
    constrain = settings.constrain
    if constrain is None:
        constrain = info.server in ("vllm", "loraplex")
    return client, constrain, {"endpoint": info.url, "constrained": constrain}


async def _judge_all(s: EvalSettings, judge, examples, report: EvalReport, bar) -> None:
    """Every model after the first against the first, each pair in both orders."""
    client, constrain, _ = judge
    baseline = report.models[0]
    for result in report.models[1:]:
        bar.set_description(f"{result.model}: judge")
        pairs = [
            (e, mine, theirs)
            for e, mine, theirs in zip(examples, result.answers, baseline.answers, strict=True)
        ]

        async def both_orders(pair) -> tuple[Verdict, Verdict]:
            e, mine, theirs = pair
            if mine is None or theirs is None:
                bar.update(2)
                return Verdict(None, "no answer to judge", failed=True), Verdict(None, "")
            first = await ask(client, s.judge, constrain, e.question, mine, theirs)
            bar.update(1)
            second = await ask(client, s.judge, constrain, e.question, theirs, mine)
            return first, second

        verdicts = await pool(pairs, both_orders, s.concurrency, _SecondOfPair(bar))
        result.judge = _judge_figure(baseline.model, verdicts.values)


class _SecondOfPair:
    """The judge counts its own progress (two requests per pair)."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def update(self, _: int) -> None:
        self.bar.update(1)


def _judge_figure(against: str, verdicts: list) -> JudgeFigure:
    figure = JudgeFigure(against=against)
    rows, errors, invalid = [], [], []
    for first, second in (v for v in verdicts if v is not None):
        if first.failed or second.failed:
            figure.failed += 1
            errors += [v.raw for v in (first, second) if v.failed]
            continue
        outcome = combine(first, second)
        if outcome is None:
            figure.invalid += 1
            invalid += [v.raw for v in (first, second) if v.choice is None]
            continue
        setattr(figure, outcome, getattr(figure, outcome) + 1)
        rows.append([outcome == "win", outcome == "tie", outcome == "loss"])
    figure.errors = list(dict.fromkeys(errors))[:MAX_ERRORS]
    figure.invalid_samples = list(dict.fromkeys(invalid))[:MAX_ERRORS]
    figure.n = len(rows)
    interval = bootstrap(np.asarray(rows, dtype=float), METRICS[JUDGE].statistic)
    if interval is not None:
        figure.value, figure.low, figure.high = interval.value, interval.low, interval.high
    return figure
