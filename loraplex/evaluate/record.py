"""Evaluations of stored versions, kept in the store beside them (adapters/evaluations.py).

A model named as a store reference (`name`, `name:alias`, `name@N`) is
resolved to its immutable `name@N` before the run, and the endpoint is asked
for exactly that version, so the figures belong to it even if an alias moves
meanwhile. Names the store does not know (the base model) are asked for as
given and not recorded.
"""

from loraplex.adapters import AdapterError, AdapterRef, Store
from loraplex.adapters.evaluations import AliasDecision, Evaluation, MetricFigure, save_evaluation
from loraplex.evaluate.results import EvalReport, ModelResult


def resolve_versions(store: Store | None, models: list[str]) -> dict[str, str]:
    """model → name@N for every model the store holds."""
    if store is None:
        return {}
    versions = {}
    for model in models:
        try:
            AdapterRef.parse(model)
            versions[model] = store.resolve(model).ref
        except AdapterError:  # not a reference, or not in this store: the base, say
            continue
    return versions


def to_evaluation(
    report: EvalReport, result: ModelResult, decision: AliasDecision | None = None
) -> Evaluation:
    figures = {
        name: MetricFigure(**f.model_dump(include={"value", "low", "high", "n", "failed"}))
        for name in report.metrics
        if (f := result.figure(name)) is not None
    }
    return Evaluation(
        adapter=result.served_as,
        data_sha256=report.data.sha256,
        data_path=report.data.path,
        examples=report.data.examples,
        endpoint=report.endpoint,
        base_model=report.base_model,
        quantization=report.quantization,
        metrics=figures,
        decision=decision,
    )


def record_all(store: Store, report: EvalReport, versions: dict[str, str]) -> list[str]:
    """Store the evaluation of every stored version in the report; returns their refs."""
    recorded = []
    for result in report.models:
        if result.model in versions:
            save_evaluation(store, to_evaluation(report, result))
            recorded.append(result.served_as)
    return recorded
