"""Deciding the paper's claims from confidence intervals, never from point estimates.

Every number of Tables 1-4 is an estimate ``{"value", "low", "high", "n"}`` (a Wilson interval for
rates, Student-t for mean distortions; :mod:`intriguing.stats`). A claim such as "FC10(1e-4) needs
less distortion than FC10(1e-2)" (Section 4.2) compares two of them. :func:`gap` gives the
difference with an approximate 95% interval built from the two intervals (Newcombe's 1998 hybrid
method: each side's half-width, taken on the side that matters, combined in quadrature; exact for
independent normal estimates, conservative when the two share examples and are positively
correlated, as transfer cells are). A comparison is decided only when that interval excludes 0;
otherwise it is undecided and :meth:`Gap.needed_n` says roughly what sample size would decide it
if the gap stayed the same (an interval shrinks like ``1/sqrt(n)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

Estimate = Mapping[str, Any]


def _finite(*values: Any) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


@dataclass(frozen=True)
class Gap:
    """``a - b`` with its approximate 95% interval ``[low, high]``; ``n`` is the smaller side's sample."""

    value: float
    low: float
    high: float
    n: int

    @property
    def sign(self) -> bool | None:
        """``True`` when the interval lies above 0, ``False`` below, ``None`` when it straddles 0 (or is unknown)."""
        if not _finite(self.low, self.high):
            return None
        return True if self.low > 0 else False if self.high < 0 else None

    def needed_n(self) -> int | None:
        """The sample size whose interval would exclude 0, were the observed gap to stay (``None``: no gap seen)."""
        if self.sign is not None or not _finite(self.value, self.low, self.high) or self.value == 0 or self.n < 1:
            return None
        half = (self.high - self.low) / 2
        return max(self.n + 1, math.ceil(self.n * (half / abs(self.value)) ** 2))

    def text(self, percent: bool = True) -> str:
        """``+3.8 pp (1.2 to 6.4)`` for rates, ``+0.012 (0.004 to 0.020)`` otherwise."""
        scale, unit = (100, " pp") if percent else (1, "")
        digits = 1 if percent else 3
        if not _finite(self.low, self.high):
            return f"{scale * self.value:+.{digits}f}{unit} (no interval)"
        return (f"{scale * self.value:+.{digits}f}{unit} ({scale * self.low:+.{digits}f} to "
                f"{scale * self.high:+.{digits}f})")


def gap(a: Estimate, b: Estimate) -> Gap:
    """``a - b`` for two estimates, with the interval of :mod:`this module <intriguing.paper.verdicts>`."""
    value = a["value"] - b["value"]
    if not _finite(a["low"], a["high"], b["low"], b["high"]):
        return Gap(value, math.nan, math.nan, min(a["n"], b["n"]))
    low = value - math.hypot(a["value"] - a["low"], b["high"] - b["value"])
    high = value + math.hypot(a["high"] - a["value"], b["value"] - b["low"])
    return Gap(value, low, high, min(a["n"], b["n"]))


def average(estimates: Sequence[Estimate]) -> dict[str, Any]:
    """The mean of several estimates, each side's half-widths combined in quadrature (as if independent)."""
    k = len(estimates)
    value = sum(e["value"] for e in estimates) / k
    low = value - math.sqrt(sum((e["value"] - e["low"]) ** 2 for e in estimates)) / k
    high = value + math.sqrt(sum((e["high"] - e["value"]) ** 2 for e in estimates)) / k
    return {"value": value, "low": low, "high": high, "n": min(e["n"] for e in estimates)}


def at_least(estimate: Estimate, threshold: float) -> Gap:
    """``estimate - threshold`` as a :class:`Gap` (a fixed threshold has no uncertainty)."""
    return gap(estimate, {"value": threshold, "low": threshold, "high": threshold, "n": estimate["n"]})


@dataclass(frozen=True)
class Verdict:
    """Several comparisons that must all go one way: ``holds`` and the sample size that would decide it."""

    holds: bool | None
    needed_n: int | None
    against: tuple[str, ...] = ()


def all_positive(gaps: Mapping[str, Gap]) -> Verdict:
    """Holds when every gap is significantly positive, fails when one is significantly negative, else undecided.

    ``against`` names the gaps that contradict the claim (or, when undecided, those that do not decide).
    """
    against = tuple(name for name, g in gaps.items() if g.sign is False)
    if against:
        return Verdict(False, None, against)
    open_ = tuple(name for name, g in gaps.items() if g.sign is None)
    if not open_:
        return Verdict(True, None)
    needed = [n for n in (gaps[name].needed_n() for name in open_) if n is not None]
    return Verdict(None, max(needed) if needed else None, open_)


def undecided_note(verdict: Verdict, unit: str) -> str:
    """What would decide an undecided verdict, e.g. "N ≈ 3,400 attacked examples per model would decide it"."""
    if verdict.holds is not None:
        return ""
    if verdict.needed_n is None:
        return f"; undecided: no interval (too few samples) or no gap for {', '.join(verdict.against)}"
    return (f"; undecided ({len(verdict.against)} comparison(s) not separated); N ≈ {verdict.needed_n:,} {unit} "
            "would decide it if the gaps stay")


def listed(gaps: Iterable[tuple[str, Gap]], percent: bool = True) -> str:
    """``name: gap (interval)`` for each gap, joined by semicolons: the evidence a verdict quotes."""
    return "; ".join(f"{name}: {g.text(percent)}" for name, g in gaps)


def welch_gap(a: Sequence[float], b: Sequence[float]) -> Gap:
    """``mean(a) - mean(b)`` over seeds with Welch's 95% t-interval; ``n`` is the smaller number of seeds.

    For quantities measured once per training seed (adversarial training's test errors, Section 4.1),
    where the seed-to-seed spread, not the test set, dominates the uncertainty.
    """
    value = sum(a) / len(a) - sum(b) / len(b)
    if min(len(a), len(b)) < 2:
        return Gap(value, math.nan, math.nan, min(len(a), len(b)))
    va, vb = (stats.tvar(x) / len(x) for x in (a, b))
    se = math.sqrt(va + vb)
    if se == 0:
        return Gap(value, value, value, min(len(a), len(b)))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    return Gap(value, value - half, value + half, min(len(a), len(b)))
