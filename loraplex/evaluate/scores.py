"""The metrics: what each measures, per example, and how a set of examples adds up.

Each metric turns one example into a row of numbers and a set of examples
into one figure from the rows' sum (so bootstrap.py can resample any of
them). Text metrics come from maintained libraries, never re-implemented:
ROUGE-L from `rouge-score` (Google's reimplementation of ROUGE-1.5.5),
BLEU-4 from `sacrebleu` (corpus BLEU, its default 13a tokenizer and exp
smoothing: the figure `sacrebleu.corpus_bleu` prints for the same texts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `loraplex adapters ...` loads this module's names, not numpy
    import numpy as np

LOSS, EXACT, ROUGE_L, BLEU_4, JUDGE = "loss", "exact", "rouge-l", "bleu-4", "judge"
GENERATION_METRICS = (EXACT, ROUGE_L, BLEU_4)
ALL_METRICS = (LOSS, *GENERATION_METRICS, JUDGE)
DEFAULT_METRICS = (LOSS, *GENERATION_METRICS)


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    statistic: Callable[[np.ndarray], float]  # sum of rows → the figure
    description: str


def _mean(total: np.ndarray) -> float:
    return float(total[0] / total[1]) if total[1] else float("nan")


def _bleu(total: np.ndarray) -> float:
    from sacrebleu.metrics import BLEU

    n = [int(x) for x in total]
    return float(BLEU.compute_bleu(n[2:6], n[6:10], n[0], n[1], smooth_method="exp").score)


def _win_rate(total: np.ndarray) -> float:
    win, tie, loss = total
    return float((win + tie / 2) / (win + tie + loss)) if win + tie + loss else float("nan")


METRICS = {
    LOSS: Metric(LOSS, False, _mean, "mean loss per answer token (nats), from prompt logprobs"),
    EXACT: Metric(EXACT, True, _mean, "share of greedy answers equal to the reference"),
    ROUGE_L: Metric(ROUGE_L, True, _mean, "mean ROUGE-L F1 of greedy answers (rouge-score)"),
    BLEU_4: Metric(BLEU_4, True, _bleu, "corpus BLEU-4 of greedy answers (sacrebleu)"),
    JUDGE: Metric(JUDGE, True, _win_rate, "judge win rate against the first model, ties half"),
}


def loss_row(nll_sum: float, tokens: int) -> list[float]:
    return [nll_sum, tokens]


def exact_row(answer: str, reference: str) -> list[float]:
    return [float(answer.strip() == reference.strip()), 1.0]


def rouge_l_row(answer: str, reference: str) -> list[float]:
    return [_rouge().score(reference, answer)["rougeL"].fmeasure, 1.0]


def bleu_row(answer: str, reference: str) -> list[float]:
    """sacrebleu's sufficient statistics: lengths, then matches and totals for 1..4-grams."""
    score = _sentence_bleu().sentence_score(answer, [reference])
    return [score.sys_len, score.ref_len, *score.counts, *score.totals]


ROWS: dict[str, Callable[[str, str], list[float]]] = {
    EXACT: exact_row,
    ROUGE_L: rouge_l_row,
    BLEU_4: bleu_row,
}


@cache
def _rouge():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=False)


@cache
def _sentence_bleu():
    from sacrebleu.metrics import BLEU

    # effective_order only changes sentence-level scores (and silences sacrebleu's
    # advice to set it); the counts used here are the same either way.
    return BLEU(effective_order=True)


def parse_metrics(text: str) -> tuple[str, ...]:
    """`loss,rouge-l` → ("loss", "rouge-l"); unknown names are a one-line error."""
    from loraplex.evaluate.errors import EvalError

    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise EvalError(
            f"unknown metric {', '.join(unknown) or '(none)'}; choose from {', '.join(ALL_METRICS)}"
        )
    return names
