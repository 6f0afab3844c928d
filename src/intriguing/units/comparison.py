"""Units versus another family of directions over the whole population, not a few pictures.

The paper's Section 3 rests on Figs 1-2 alone. Here the mean coherence of all units is compared
with that of all directions of another family, pooled over seeds: the difference of means with a
percentile bootstrap interval and a permutation p-value, and a verdict read in the direction of
coherence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from intriguing.errors import IntriguingError
from intriguing.units.metrics import COHERENT_SIGN


@dataclass
class Difference:
    """Mean of units minus mean of another family, averaged over seeds, with its uncertainty.

    ``ci_low``/``ci_high``: percentile bootstrap CI (directions resampled within each seed);
    ``p_value``: two-sided permutation test (family labels shuffled within each seed).
    ``seed_differences`` shows the spread between seeds that the CI does not cover.
    ``tost_low``/``tost_high``: the percentile bootstrap interval at level ``1 - 2 (1 - level)``
    (90% for 95%), the interval of the two one-sided equivalence tests (:func:`equivalent`).
    """

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    seed_differences: list[float]
    tost_low: float | None = None
    tost_high: float | None = None


def _canonical(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Values as an (n, m) float64 matrix (one row per direction) in lexicographic row order.

    Resampling a canonical order makes every statistic a function of the *set* of directions:
    relabelling (permuting) units cannot change a single digit of the result.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    return x[np.lexsort(x.T[::-1])]


def _resampled_differences(a: np.ndarray, b: np.ndarray, resamples: int,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap and permutation replicates of ``mean(a) - mean(b)``, each (resamples, m).

    Bootstrap: rows of ``a`` and of ``b`` resampled with replacement, each replicate's mean taken as its
    draw counts times the rows (one matmul, :func:`_resampled_means`). Permutation: which pooled rows
    count as ``a`` reshuffled, as a 0/1 membership matrix so that the means are one matmul too. The work
    runs in chunks of resamples only to bound memory.
    """
    pooled = np.concatenate([a, b])
    n = len(pooled)
    membership = np.arange(n) < len(a)
    boot, permuted = [], []
    chunk = max(1, 2**22 // (n * a.shape[1]))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        boot.append(_resampled_means(a, rng.integers(0, len(a), (size, len(a))))
                    - _resampled_means(b, rng.integers(0, len(b), (size, len(b)))))
        first = rng.permuted(np.broadcast_to(membership, (size, n)), axis=1).astype(np.float64) @ pooled
        permuted.append(first / len(a) - (pooled.sum(0) - first) / len(b))
    return np.concatenate(boot), np.concatenate(permuted)


def _resampled_means(x: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The mean of the rows of ``x`` (n, m) drawn in each row of ``draws`` (resamples, k): how often each row
    was drawn, times ``x``. Gathering the drawn rows and averaging them took 4x as long (the units section's
    statistics, issue 14)."""
    size, k = draws.shape
    counts = np.bincount((draws + len(x) * np.arange(size)[:, None]).ravel(), minlength=size * len(x))
    return counts.reshape(size, len(x)) @ x / k


def _check_compare_inputs(pairs: list[tuple[np.ndarray, np.ndarray]], resamples: int, level: float) -> None:
    metrics = pairs[0][0].shape[1]
    if any(len(a) == 0 or len(b) == 0 or a.shape[1] != metrics or b.shape[1] != metrics for a, b in pairs):
        raise IntriguingError("compare: every seed needs at least one value on each side, with the same metrics")
    if resamples < 1 or not 0 < level < 1:
        raise IntriguingError(f"compare: expected resamples >= 1 and 0 < level < 1, got {resamples} and {level}")


def compare(
    units: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[Difference]:
    """Difference of means ``units - other`` with bootstrap CI and permutation p-value, pooled over seeds.

    ``units`` and ``other`` hold one array per seed: shape (n,) for one metric, or (n, m) for m
    metrics compared at once on the same resampled directions; one :class:`Difference` per metric.
    The per-seed differences are averaged, and so are their resampled replicates.
    """
    if len(units) != len(other) or not units:
        raise IntriguingError(f"compare: expected one array per seed on both sides, got {len(units)} and {len(other)}")
    pairs = [(_canonical(a), _canonical(b)) for a, b in zip(units, other)]
    _check_compare_inputs(pairs, resamples, level)
    rng = np.random.default_rng(seed)
    observed = np.array([a.mean(0) - b.mean(0) for a, b in pairs])  # (seeds, m)
    replicates = [_resampled_differences(a, b, resamples, rng) for a, b in pairs]
    boot = np.mean([r[0] for r in replicates], axis=0)  # (resamples, m)
    permuted = np.mean([r[1] for r in replicates], axis=0)
    difference = observed.mean(0)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    tost_low, tost_high = np.quantile(boot, [1 - level, level], axis=0)
    # The tolerance counts a permuted split equal to the observed one as "as extreme" despite rounding.
    extreme = (np.abs(permuted) >= np.abs(difference) - 1e-12).sum(0)
    return [
        Difference(
            difference=float(difference[j]),
            ci_low=float(low[j]),
            ci_high=float(high[j]),
            p_value=float((1 + extreme[j]) / (resamples + 1)),
            seed_differences=observed[:, j].tolist(),
            tost_low=float(tost_low[j]),
            tost_high=float(tost_high[j]),
        )
        for j in range(len(difference))
    ]


@dataclass(kw_only=True)
class Comparison(Difference):
    """Units versus one family on one metric (pooled over seeds), with its verdict.

    ``verdict`` reads the difference in the direction of coherence (higher purity and selectivity,
    lower entropy): "units more coherent" or "units less coherent" when the CI excludes 0 and
    p < 1 - level, otherwise "no significant difference".
    """

    metric: str
    family: str
    units_mean: float
    family_mean: float
    verdict: str


def verdict(metric: str, difference: Difference, level: float = 0.95) -> str:
    """Whether units are more or less coherent than the other family on ``metric``, or neither.

    See :class:`Comparison` for the rule."""
    sign = COHERENT_SIGN[metric]
    low, high = sorted((sign * difference.ci_low, sign * difference.ci_high))
    if difference.p_value < 1 - level and low > 0:
        return "units more coherent"
    if difference.p_value < 1 - level and high < 0:
        return "units less coherent"
    return "no significant difference"


def equivalent(difference: Difference, margin: float) -> bool | None:
    """Two one-sided tests (TOST, Schuirmann 1987) at the level of ``compare``: is the difference within ``±margin``?

    Equivalence is shown when the ``1 - 2 (1 - level)`` bootstrap interval (``tost_low``/``tost_high``)
    lies inside ``(-margin, margin)``: both one-sided tests then reject a difference beyond the
    margin. "No significant difference" is absence of evidence; this is evidence of no difference
    larger than ``margin``, which Section 3's claim ("no more coherent") needs. ``None`` for a
    difference computed without the interval (stored before it existed).
    """
    if margin <= 0:
        raise IntriguingError(f"margin: expected a positive equivalence margin, got {margin}")
    if difference.tost_low is None or difference.tost_high is None:
        return None
    return -margin < difference.tost_low and difference.tost_high < margin
