"""Gated alias moves: point `name:alias` at version N only if N measures better.

One run evaluates the candidate and the version the alias points at now, on
the same data, through the same endpoint. The alias moves only if the
candidate is better by more than `margin`, in the metric's own units
(nats for loss, a share for exact / ROUGE-L / the judge's win rate, BLEU
points for bleu-4); for the judge, the candidate's win rate against the
current version must pass 0.5 + margin. The move is a compare-and-swap: if
someone moved the alias during the run, it is not moved. Either way the
decision is stored with the candidate's evaluation, and the current
version's evaluation is stored too.
"""

from dataclasses import dataclass, replace

from loraplex.adapters import AdapterRef, AliasConflict, Store
from loraplex.adapters.evaluations import AliasDecision, save_evaluation
from loraplex.evaluate.errors import EvalError
from loraplex.evaluate.record import to_evaluation
from loraplex.evaluate.results import EvalReport, Figure
from loraplex.evaluate.run import EvalSettings, evaluate
from loraplex.evaluate.scores import JUDGE, LOSS, METRICS


@dataclass(frozen=True)
class Promotion:
    decision: AliasDecision
    report: EvalReport


def promote(
    store: Store, ref: str, alias: str, settings: EvalSettings, tokenizer, margin: float = 0.0
) -> Promotion:
    """Evaluate `ref` against `name:alias` and move the alias if `ref` is better.

    `settings.metrics` holds the one metric that decides; `settings.models` is filled here.
    """
    metric = settings.metrics[0]
    candidate = store.resolve(ref)
    name = candidate.name
    AdapterRef.parse(f"{name}:{alias}")  # a valid alias name, before any work
    current = store.aliases(name).get(alias)
    if current == candidate.version:
        raise EvalError(f"{name}:{alias} already points at {candidate.ref}")
    if metric == JUDGE and current is None:
        raise EvalError(f"{name}:{alias} does not exist: the judge needs a version to compare with")
    baseline = f"{name}@{current}" if current is not None else None
    models = [m for m in (baseline, candidate.ref) if m]
    report = evaluate(replace(settings, models=models, served_as={m: m for m in models}), tokenizer)
    if report.partial:
        raise EvalError("the evaluation was interrupted: the alias was not moved")
    new = report.model(candidate.ref).figure(metric)
    old = report.model(baseline).figure(metric) if baseline else None
    moved, reason = _decide(metric, margin, new, old, baseline)
    decision = AliasDecision(
        alias=alias,
        metric=metric,
        margin=margin,
        candidate=candidate.ref,
        current=baseline,
        candidate_value=new.value if new else None,
        current_value=old.value if old else None,
        moved=moved,
        reason=reason,
    )
    if moved:
        try:
            store.set_alias(name, alias, candidate.version, expect=current)
        except AliasConflict as exc:
            decision = decision.model_copy(update={"moved": False, "reason": str(exc)})
    if baseline:
        save_evaluation(store, to_evaluation(report, report.model(baseline)))
    save_evaluation(store, to_evaluation(report, report.model(candidate.ref), decision))
    return Promotion(decision, report)


def _decide(
    metric: str, margin: float, new: Figure | None, old: Figure | None, baseline: str | None
) -> tuple[bool, str]:
    if new is None or new.value is None or new.failed:
        return False, f"the candidate's {metric} is incomplete ({new.failed if new else 0} failed)"
    if baseline is None:
        return True, "the alias did not exist"
    if metric == JUDGE:
        better = new.value - 0.5
        if better > margin:
            return True, f"judge win rate {new.value:.3f} > 0.5 + margin {margin:g}"
        return False, f"judge win rate {new.value:.3f} is not above 0.5 + margin {margin:g}"
    if old is None or old.value is None or old.failed:
        return False, f"the current version's {metric} is incomplete"
    sign = 1 if METRICS[metric].higher_is_better else -1
    better = sign * (new.value - old.value)
    compare = f"{metric} {new.value:.4f} vs {old.value:.4f}"
    if better > margin:
        return True, f"{compare}: better by {better:.4f} > margin {margin:g}"
    word = "lower" if metric == LOSS else "higher"
    return False, f"{compare}: not {word} by more than margin {margin:g}"
