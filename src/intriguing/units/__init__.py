"""Section 3 of Szegedy et al. 2014: do single units carry more meaning than random directions?

The paper shows the held-out images ``x'`` that maximise ``<phi(x), e_i>`` for a unit ``e_i`` of a
layer ``phi`` (Fig. 1) next to those that maximise ``<phi(x), v>`` for a random direction ``v``
(Fig. 2), finds both equally coherent, and concludes that the *space* of activations, not its
individual units, holds the semantic information. That claim rests on pictures alone. This package
measures it over the whole population of directions:

* ``phi(x)`` of any named module of any model, through a forward hook (:mod:`.activations`);
* directions: the natural basis (every unit) and random directions from several laws (:data:`LAWS`),
  each random direction taken with both signs, since none of them has a preferred one (:mod:`.directions`);
* the coherence of each direction, from the labels of its top-k images (purity, label entropy) and
  from the class means of its projection over all images (class selectivity, Morcos et al. 2018)
  (:mod:`.metrics`, :mod:`.analysis`);
* units versus each law over the population, pooled over seeds: difference of means, bootstrap CI,
  permutation p-value (:mod:`.comparison`, :func:`summarise_study`).

The library returns records; the report section (:mod:`intriguing.paper.sections.units`) adds the
baselines and renders them, and :mod:`intriguing.report.figures.units` draws Figs 1-2.
"""

from __future__ import annotations

from intriguing.units.activations import find_layer, layer_activations
from intriguing.units.analysis import RANDOM_IMAGES, UNITS, LayerAnalysis, analyse, analyse_activations
from intriguing.units.comparison import Comparison, Difference, compare, equivalent, verdict
from intriguing.units.directions import LAWS, WHITENING_RTOL, both_signs, random_directions, whitening_matrix
from intriguing.units.metrics import COHERENT_SIGN, METRICS, DirectionMetrics, direction_metrics
from intriguing.units.study import FamilySummary, UnitStudy, slug, study_model, summarise_study

__all__ = [
    "COHERENT_SIGN", "LAWS", "METRICS", "RANDOM_IMAGES", "UNITS", "WHITENING_RTOL",
    "Comparison", "Difference", "DirectionMetrics", "FamilySummary", "LayerAnalysis", "UnitStudy",
    "analyse", "analyse_activations", "both_signs", "compare", "direction_metrics", "equivalent", "find_layer",
    "layer_activations", "random_directions", "slug", "study_model", "summarise_study", "verdict",
    "whitening_matrix",
]
