"""One layer under one seed: the coherence of its units, of random directions and of random images.

Section 3 of the paper sets the top images of single units (Fig. 1) beside those of random
directions (Fig. 2). :func:`analyse` measures both for every unit and every drawn direction, plus
the chance level: k images drawn at random.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from intriguing.errors import IntriguingError, check_count, check_labels, check_seed
from intriguing.units.activations import layer_activations
from intriguing.units.directions import LAWS, RANDOM_IMAGES_STREAM, both_signs, random_directions, random_stream
from intriguing.units.metrics import DirectionMetrics, direction_metrics

UNITS = "units"
RANDOM_IMAGES = "random images"


@dataclass
class LayerAnalysis:
    """One layer under one seed: the metrics of its units, of every random law and of random images."""

    layer: str
    seed: int
    k: int
    directions: int  # random draws per law; each is used with both signs
    units: int
    families: dict[str, DirectionMetrics]


def _check_analysis_inputs(activations: torch.Tensor, labels: torch.Tensor, k: int, directions: int) -> None:
    if not isinstance(activations, torch.Tensor) or activations.dim() != 2 or not activations.is_floating_point():
        got = tuple(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
        raise IntriguingError(f"activations: expected a floating-point (N, d) tensor, one row per image, got {got}")
    if not torch.isfinite(activations).all():
        raise IntriguingError("activations: contain NaN or infinite values; check the model's weights")
    n = len(activations)
    check_labels(labels, "labels", n)
    if labels.min() < 0:
        raise IntriguingError(f"labels: class indices must be non-negative, got {int(labels.min())}")
    if len(labels.unique()) < 2:
        raise IntriguingError("labels: need images of at least 2 classes to measure coherence")
    if not check_count("k", k) < n:
        raise IntriguingError(f"k: expected 1 <= k < {n} (the number of images), got {k}")
    check_count("directions", directions)


def analyse_activations(
    activations: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int = 8,
    directions: int = 200,
    seed: int = 0,
    laws: Sequence[str] = LAWS,
    layer: str = "activations",
) -> LayerAnalysis:
    """Metrics of every unit, of ``directions`` random directions per law (both signs) and of random images.

    The random-images family ranks images by noise independent of them: its top-k is k random
    images, the chance level every selection of images is measured against.
    """
    _check_analysis_inputs(activations, labels, k, directions)
    check_seed(seed)
    activations = activations.float()
    families = {UNITS: direction_metrics(activations, labels, k)}
    if families[UNITS].constant.all():
        raise IntriguingError(f"layer {layer!r}: every unit is constant over the images; nothing to rank")
    for law in laws:
        signed = both_signs(random_directions(law, activations, directions, seed))
        families[law] = direction_metrics(activations @ signed, labels, k)
    noise = random_stream(seed, RANDOM_IMAGES_STREAM).standard_normal((len(activations), 2 * directions),
                                                                      dtype=np.float32)
    families[RANDOM_IMAGES] = direction_metrics(torch.from_numpy(noise), labels, k)
    return LayerAnalysis(layer=layer, seed=seed, k=k, directions=directions, units=activations.shape[1],
                         families=families)


def analyse(model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> LayerAnalysis:
    """:func:`analyse_activations` of ``model``'s layer ``layer`` on ``images`` (N, 1, 28, 28) in [0, 1]."""
    return analyse_activations(layer_activations(model, images, layer), labels, layer=layer, **kwargs)
