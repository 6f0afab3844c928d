"""One layer of one model over several seeds: Section 3's question answered for the whole population.

:func:`summarise_study` pools the per-seed analyses of a layer into a :class:`UnitStudy`: every
family's mean metrics and purity distribution, and units versus each other family on each metric
(:func:`~intriguing.units.comparison.compare`). The study is a record: the report renders it, the
``units`` command prints it, JSON stores it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from intriguing.errors import IntriguingError
from intriguing.units.analysis import UNITS, LayerAnalysis, analyse
from intriguing.units.comparison import Comparison, compare, verdict
from intriguing.units.metrics import METRICS, DirectionMetrics


@dataclass
class FamilySummary:
    """One family over all seeds: how many directions, their mean metrics, the purity distribution.

    ``purity_levels[j - 1]`` is the share of directions whose top-k holds j images of one label.
    """

    family: str
    directions: int
    constant: int
    means: dict[str, float]
    purity_levels: list[float]


@dataclass
class UnitStudy:
    """One layer of one model over several seeds: every family's summary, and units versus each family."""

    model: str
    layer: str
    variant: str  # "trained", "untrained" or "pixels"
    k: int
    directions: int
    units: int
    seeds: list[int]
    families: list[FamilySummary]
    comparisons: list[Comparison]

    def comparison(self, family: str, metric: str = "purity") -> Comparison:
        """Units versus ``family`` on ``metric`` (top-k purity unless told: the paper's figures show top images)."""
        return next(c for c in self.comparisons if c.family == family and c.metric == metric)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> UnitStudy:
        """The study back from its JSON form (``records.to_jsonable``), e.g. a stored report section."""
        raw = dict(raw)
        raw["families"] = [FamilySummary(**f) for f in raw["families"]]
        raw["comparisons"] = [Comparison(**c) for c in raw["comparisons"]]
        return cls(**raw)


def _mean(values: Sequence[float]) -> float:
    """The mean with an exactly rounded sum (``math.fsum``): the same digits in any order of the values."""
    return math.fsum(values) / len(values)


def _family_summary(family: str, metrics: Sequence[DirectionMetrics], k: int) -> FamilySummary:
    purity = np.concatenate([m.values("purity") for m in metrics])
    levels = np.bincount(np.rint(purity * k).astype(int), minlength=k + 1)[1:] / len(purity)
    return FamilySummary(
        family=family,
        directions=len(purity),
        constant=int(sum(m.constant.sum() for m in metrics)),
        means={metric: _mean(np.concatenate([m.values(metric) for m in metrics])) for metric in METRICS},
        purity_levels=levels.tolist(),
    )


def _comparisons(analyses: Sequence[LayerAnalysis], family: str, resamples: int, seed: int,
                 level: float) -> list[Comparison]:
    """Units versus ``family`` on every metric, compared at once on the same resampled directions."""
    differences = compare([a.families[UNITS].table() for a in analyses],
                          [a.families[family].table() for a in analyses],
                          resamples=resamples, seed=seed, level=level)
    return [
        Comparison(
            **dataclasses.asdict(difference), metric=metric, family=family,
            units_mean=_mean([_mean(a.families[UNITS].values(metric)) for a in analyses]),
            family_mean=_mean([_mean(a.families[family].values(metric)) for a in analyses]),
            verdict=verdict(metric, difference, level),
        )
        for metric, difference in zip(METRICS, differences)
    ]


def summarise_study(
    analyses: Sequence[LayerAnalysis],
    *,
    model: str,
    variant: str = "trained",
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> UnitStudy:
    """Pool one layer's analyses (one per seed) into a :class:`UnitStudy`: units versus every family."""
    first = analyses[0]
    if any(a.layer != first.layer or a.k != first.k or set(a.families) != set(first.families) for a in analyses):
        raise IntriguingError("summarise_study: the analyses must share their layer, k and direction families")
    families = list(first.families)
    comparisons = [c for family in families[1:] for c in _comparisons(analyses, family, resamples, seed, level)]
    return UnitStudy(
        model=model, layer=first.layer, variant=variant, k=first.k, directions=first.directions,
        units=first.units, seeds=[a.seed for a in analyses],
        families=[_family_summary(f, [a.families[f] for a in analyses], first.k) for f in families],
        comparisons=comparisons,
    )


def study_model(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    model_name: str = "model",
    k: int = 8,
    directions: int = 200,
    seed: int = 0,
    resamples: int = 2000,
) -> tuple[LayerAnalysis, UnitStudy]:
    """Analyse one layer of one model under one seed and summarise it: the library side of ``intriguing units``.

    Returns the per-direction analysis (what the paper's Figs 1-2 show) and the study (the verdicts).
    """
    analysis = analyse(model, layer, images, labels, k=k, directions=directions, seed=seed)
    return analysis, summarise_study([analysis], model=model_name, resamples=resamples, seed=seed)


def slug(*parts: str) -> str:
    """A file-name-safe name from parts such as a model and a layer name ("FC100-100-10", "h1")."""
    return "-".join("".join(ch if ch.isalnum() or ch in "-." else "_" for ch in p) for p in parts)
