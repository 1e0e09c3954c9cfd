"""The metrics and their intervals, on fixed texts: the libraries' own figures, resampled."""

import numpy as np
import pytest
import sacrebleu

from loraplex.evaluate.bootstrap import bootstrap
from loraplex.evaluate.errors import EvalError
from loraplex.evaluate.judge import Verdict, combine, parse_verdict
from loraplex.evaluate.scores import METRICS, ROWS, parse_metrics

ANSWERS = ["Paris is the capital.", "Blue on a clear day", "A pear.", "I do not know", "42"]
REFERENCES = ["Paris.", "Blue, on a clear day.", "A pear.", "Rome is the capital.", "42"]


def figure(metric: str) -> float:
    rows = np.asarray([ROWS[metric](a, r) for a, r in zip(ANSWERS, REFERENCES, strict=True)])
    return METRICS[metric].statistic(rows.sum(axis=0))


def test_bleu_from_summed_statistics_is_sacrebleus_corpus_bleu():
    assert figure("bleu-4") == pytest.approx(sacrebleu.corpus_bleu(ANSWERS, [REFERENCES]).score)


def test_rouge_l_is_rouge_scores_mean_f1_and_exact_ignores_outer_space():
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"])
    pairs = zip(ANSWERS, REFERENCES, strict=True)
    expected = np.mean([scorer.score(r, a)["rougeL"].fmeasure for a, r in pairs])
    assert figure("rouge-l") == pytest.approx(expected)
    assert figure("exact") == pytest.approx(2 / 5)
    assert ROWS["exact"](" A pear.\n", "A pear.") == [1.0, 1.0]


def test_bootstrap_interval_holds_the_value_is_seeded_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = np.column_stack([rng.normal(2.0, 1.0, 20), np.ones(20)])
    large = np.column_stack([rng.normal(2.0, 1.0, 2000), np.ones(2000)])
    mean = METRICS["exact"].statistic
    a, b = bootstrap(small, mean), bootstrap(small, mean)
    assert a == b and a.low < a.value < a.high
    c = bootstrap(large, mean)
    assert c.high - c.low < (a.high - a.low) / 4
    assert bootstrap(np.empty((0, 2)), mean) is None


def test_loss_is_per_token_over_all_examples_not_a_mean_of_means():
    rows = np.asarray([[10.0, 10], [1.0, 1]])  # 1.0 per token in both
    assert METRICS["loss"].statistic(rows.sum(axis=0)) == 1.0
    assert bootstrap(rows, METRICS["loss"].statistic).low == 1.0


@pytest.mark.parametrize(
    ("text", "choice"),
    [("A", "A"), (" b.", "B"), ('"Tie"', "tie"), ("[[B]]", "B"), ("**A**", "A"),
     ("A is better", None), ("", None), ("C", None), ("A or B", None)],
)  # fmt: skip
def test_verdicts_in_the_asked_format_only(text, choice):
    assert parse_verdict(text) == choice


def test_position_swap_turns_a_first_answer_preference_into_a_tie():
    a, b, tie, bad = Verdict("A"), Verdict("B"), Verdict("tie"), Verdict(None, "hmm")
    assert combine(a, a) == "tie"  # always the first: a tie, whatever the answers
    assert combine(b, b) == "tie"
    assert combine(a, b) == "win" and combine(b, a) == "loss"
    assert combine(tie, b) == "tie" and combine(a, bad) is None
    assert METRICS["judge"].statistic(np.asarray([1, 2, 1])) == 0.5


def test_metric_names_are_checked():
    assert parse_metrics("loss, ROUGE-L,loss") == ("loss", "rouge-l")
    with pytest.raises(EvalError, match="unknown metric bleu; choose from loss, exact"):
        parse_metrics("bleu")
