"""`loraplex eval` and `loraplex adapters promote`: the command line over run.py and promote.py.

Only typer loads at import time; the tokenizer, openai and the metric
libraries load inside the commands. A user's mistake (an endpoint that is
down, a model it does not serve, a bad data file) is one line on stderr and
exit status 1. A run with failed requests still prints and writes what it
measured, then exits 1; an interrupted one writes its partial report and
exits 130.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from loraplex.evaluate.scores import ALL_METRICS, DEFAULT_METRICS

REPORTS = Path(".loraplex/evals")

ENDPOINT = typer.Option(
    "http://127.0.0.1:8000", "--endpoint", help="OpenAI-compatible server (a loraplex gateway)."
)
DATA = typer.Option(
    ..., "--data", "--eval", help="Held-out JSONL (chat, prompt/completion, alpaca)."
)
API_KEY = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="The endpoint's key.")
BASE_MODEL = typer.Option(
    None, "--base-model", help="The served base (dir or known name): its tokenizer renders data."
)
CONCURRENCY = typer.Option(8, "--concurrency", min=1, help="Requests in flight per model.")
MAX_TOKENS = typer.Option(256, "--max-tokens", min=1, help="Longest greedy answer.")
TIMEOUT = typer.Option(300.0, "--timeout", help="Seconds one request may take.")
JUDGE_ENDPOINT = typer.Option(
    None, "--judge-endpoint", help="Judge's server (default: --endpoint)."
)
JUDGE_MODEL = typer.Option(None, "--judge-model", help="Judge model (needed for the judge metric).")
JUDGE_KEY = typer.Option(None, "--judge-api-key", help="The judge endpoint's key.")
JUDGE_TIMEOUT = typer.Option(60.0, "--judge-timeout", help="Seconds one verdict may take.")
JUDGE_BODY = typer.Option(
    None, "--judge-extra-body", help="JSON merged into every judge request's body."
)
JSON_OUT = typer.Option(None, "--json", help="Report path (default .loraplex/evals/<time>.json).")
STORE = typer.Option(None, "--store", help="Adapter store URL [env LORAPLEX_STORE].")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr.")
FORMAT = typer.Option("auto", "--format", help="auto, chat, prompt-completion or alpaca.")


def eval_command(
    model: list[str] = typer.Option(
        ..., "--model", metavar="REF", help="Model or adapter (repeatable)."
    ),
    data: Path = DATA,
    endpoint: str = ENDPOINT,
    metrics: str = typer.Option(
        ",".join(DEFAULT_METRICS), "--metrics", help=f"Any of {','.join(ALL_METRICS)}."
    ),
    judge_endpoint: str = JUDGE_ENDPOINT,
    judge_model: str = JUDGE_MODEL,
    judge_api_key: str = JUDGE_KEY,
    judge_timeout: float = JUDGE_TIMEOUT,
    judge_extra_body: str = JUDGE_BODY,
    concurrency: int = CONCURRENCY,
    api_key: str = API_KEY,
    json_out: Path = JSON_OUT,
    base_model: str = BASE_MODEL,
    max_tokens: int = MAX_TOKENS,
    timeout: float = TIMEOUT,
    data_format: str = FORMAT,
    store: str = STORE,
    record: bool = typer.Option(
        True, "--record/--no-record", help="Keep each stored version's figures in the store."
    ),
    progress: bool = PROGRESS,
) -> None:
    """Score models through an endpoint: loss, exact, ROUGE-L, BLEU-4, an LLM judge."""
    from loraplex.evaluate.record import record_all, resolve_versions
    from loraplex.evaluate.scores import parse_metrics

    def action():
        chosen = parse_metrics(metrics)
        opened = _open_store(store)
        versions = resolve_versions(opened, model)
        judge = _judge(chosen, judge_endpoint or endpoint, judge_model, judge_api_key,
                       judge_timeout, judge_extra_body)  # fmt: skip
        settings = _settings(
            endpoint, model, data, chosen, api_key, concurrency, max_tokens, timeout,
            judge, progress, data_format, versions,
        )  # fmt: skip
        report = _evaluate(settings, base_model)
        _finish(report, json_out)
        if record and opened is not None and not report.partial:
            for ref in record_all(opened, report, versions):
                typer.echo(f"recorded the evaluation of {ref} in {opened.url}", err=True)
        return report

    report = _guarded(action)
    _exit_status(report)


def promote_command(
    ref: str = typer.Argument(..., help="The candidate version, name@N."),
    alias: str = typer.Option(..., "--alias", help="The alias to move, e.g. prod."),
    data: Path = DATA,
    metric: str = typer.Option("loss", "--metric", help=f"One of {','.join(ALL_METRICS)}."),
    margin: float = typer.Option(0.0, "--margin", help="Better by more than this to move."),
    endpoint: str = ENDPOINT,
    api_key: str = API_KEY,
    judge_endpoint: str = JUDGE_ENDPOINT,
    judge_model: str = JUDGE_MODEL,
    judge_api_key: str = JUDGE_KEY,
    judge_timeout: float = JUDGE_TIMEOUT,
    judge_extra_body: str = JUDGE_BODY,
    concurrency: int = CONCURRENCY,
    base_model: str = BASE_MODEL,
    max_tokens: int = MAX_TOKENS,
    timeout: float = TIMEOUT,
    data_format: str = FORMAT,
    json_out: Path = JSON_OUT,
    store: str = STORE,
    progress: bool = PROGRESS,
) -> None:
    """Move NAME:ALIAS to REF only if REF evaluates better than what ALIAS serves now."""
    from loraplex.evaluate.errors import EvalError
    from loraplex.evaluate.promote import promote
    from loraplex.evaluate.scores import parse_metrics

    def action():
        chosen = parse_metrics(metric)
        if len(chosen) != 1:
            raise EvalError("--metric takes one metric")
        judge = _judge(chosen, judge_endpoint or endpoint, judge_model, judge_api_key,
                       judge_timeout, judge_extra_body)  # fmt: skip
        settings = _settings(
            endpoint, [], data, chosen, api_key, concurrency, max_tokens, timeout,
            judge, progress, data_format, {},
        )  # fmt: skip
        from loraplex.adapters import open_store

        tokenizer = _tokenizer(base_model)
        result = promote(open_store(store), ref, alias, settings, tokenizer, margin)
        _finish(result.report, json_out)
        return result

    result = _guarded(action)
    d = result.decision
    name = d.candidate.split("@")[0]
    if d.moved:
        typer.echo(f"{name}:{alias} → {d.candidate.split('@')[1]}: {d.reason}")
        _exit_status(result.report)
        return
    current = d.current or "nothing"
    typer.echo(f"error: {name}:{alias} stays at {current}: {d.reason}", err=True)
    raise typer.Exit(1)


def _open_store(url: str | None):
    from loraplex.adapters import StoreUnavailable, open_store

    try:
        return open_store(url)
    except StoreUnavailable:
        if url:
            raise
        return None


def _judge(metrics, endpoint, model, api_key, timeout, extra_body):
    from loraplex.evaluate.errors import EvalError
    from loraplex.evaluate.judge import JudgeSettings

    if "judge" not in metrics:
        return None
    if not model:
        raise EvalError("the judge metric needs --judge-model")
    try:
        body = json.loads(extra_body) if extra_body else {}
    except ValueError as exc:
        raise EvalError(f"--judge-extra-body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise EvalError("--judge-extra-body must be a JSON object")
    return JudgeSettings(endpoint, model, api_key, timeout, extra_body=body)


def _settings(endpoint, models, data, metrics, api_key, concurrency, max_tokens, timeout,
              judge, progress, data_format, versions):  # fmt: skip
    from loraplex.evaluate.run import EvalSettings

    return EvalSettings(
        endpoint=endpoint,
        models=list(models),
        data=data,
        metrics=metrics,
        api_key=api_key,
        concurrency=concurrency,
        max_tokens=max_tokens,
        timeout=timeout,
        judge=judge,
        progress=progress,
        data_format=data_format,
        served_as=versions,
    )


def _tokenizer(base_model: str | None):
    from transformers import AutoTokenizer

    from loraplex.base_models.registry import resolve_base_model

    return AutoTokenizer.from_pretrained(resolve_base_model(base_model))


def _evaluate(settings, base_model: str | None):
    from loraplex.evaluate.endpoint import root_url
    from loraplex.evaluate.run import evaluate

    root_url(settings.endpoint)  # a malformed URL fails before the tokenizer loads
    return evaluate(settings, _tokenizer(base_model))


def _finish(report, json_out: Path | None) -> None:
    """Print the table and any data problems; write the JSON report and the plot."""
    from loraplex.evaluate.report import table, write_json, write_plot

    for problem in report.data.problems:
        typer.echo(f"skipped {problem}", err=True)
    typer.echo(table(report))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = Path(json_out) if json_out else REPORTS / f"eval-{stamp}.json"
    write_json(report, path)
    write_plot(report, path.with_suffix(".png"))
    typer.echo(f"report {path}, plot {path.with_suffix('.png')}", err=True)


def _exit_status(report) -> None:
    if report.partial:
        typer.echo("interrupted: the report holds what was measured", err=True)
        raise typer.Exit(130)
    if report.failed:
        typer.echo(f"error: {report.failed} requests failed (see the report)", err=True)
        raise typer.Exit(1)


def _guarded(action):
    """Run `action`; a user's mistake becomes one line on stderr and exit status 1."""
    from loraplex.adapters import AdapterError
    from loraplex.base_models.errors import BaseModelUnavailable
    from loraplex.evaluate.errors import EvalError
    from loraplex.trainer.errors import TrainError

    try:
        return action()
    except (EvalError, AdapterError, TrainError, BaseModelUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # a report path that cannot be written, ...
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def register(app: typer.Typer, adapters_app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    adapters_app.command("promote")(promote_command)
