"""Estimates with their confidence intervals: every number the toolkit reports, and every claim it decides.

A rate (success, transfer, error) is a proportion and gets a Wilson score interval, honest near 0 and
1 where the paper's rates often sit; a mean (distortions) gets a Student-t interval. ``Estimate`` is
the one record both produce, so tables, the report and the claim checks read the same fields.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as scipy_stats

from intriguing.errors import IntriguingError

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A measured number with its confidence interval ``[low, high]`` and sample size ``n``.

    ``method`` is ``"wilson"`` (a proportion) or ``"t"`` (a mean). NaN marks "not measured".
    """

    value: float
    low: float
    high: float
    n: int
    method: str


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """Proportion ``successes / n`` with its Wilson score interval."""
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "wilson")
    if not 0 <= successes <= n:
        raise IntriguingError(f"successes: expected 0 <= successes <= n = {n}, got {successes}")
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Estimate(p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)), n, "wilson")  # rounding


def mean_interval(values: torch.Tensor | Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean of the finite ``values`` (NaN = a failed attack, left out) with its Student-t interval."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    n = len(finite)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "t")
    mean = float(finite.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1, "t")
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(finite.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, "t")
