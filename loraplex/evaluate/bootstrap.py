"""Bootstrap confidence intervals for metrics that are functions of per-example sums.

Every metric here (mean loss per token, exact match, ROUGE-L, corpus BLEU,
judge win rate) is `statistic(sum of per-example rows)`, so one resampler
serves them all: draw n examples with replacement, add their rows, apply
the statistic; the 2.5th and 97.5th percentiles of 1,000 draws are the 95%
interval (percentile bootstrap, Efron & Tibshirani). The draws are seeded,
so the same data gives the same interval.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
# Rows drawn per chunk (resamples x examples): bounds memory at any data size.
CHUNK_ROWS = 2_000_000


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def bootstrap(
    rows: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval | None:
    """The statistic of all rows, with a 95% percentile interval; None with no rows."""
    rows = np.asarray(rows, dtype=np.float64)
    n = len(rows)
    if n == 0:
        return None
    value = statistic(rows.sum(axis=0))
    rng = np.random.default_rng(seed)
    draws: list[float] = []
    chunk = max(1, CHUNK_ROWS // n)
    while len(draws) < resamples:
        size = min(chunk, resamples - len(draws))
        picks = rng.integers(0, n, size=(size, n))
        draws += [statistic(s) for s in rows[picks].sum(axis=1)]
    finite = np.asarray([d for d in draws if np.isfinite(d)])
    if not len(finite):
        return Interval(value, value, value)
    low, high = np.percentile(finite, [2.5, 97.5])
    return Interval(float(value), float(low), float(high))
