"""How robust a trained network is: the average minimum distortion of its adversarial examples (Section 4.1).

The paper measures an adversarially trained network against its baseline by the RMS distortion
the attack needs to fool it, averaged over test examples. Every model is attacked on the same test
images with the same targets (drawn with :data:`EVAL_SEED`), so "before" and "after" are measured
on the same problems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from intriguing import seeding
from intriguing.advtrain.layers import INPUT, attack_layer, output_classes
from intriguing.advtrain.pools import TARGETS
from intriguing.attacks import LBFGS, LBFGSConfig, Targeted, Untargeted
from intriguing.errors import IntriguingError

# Seed of the test examples' attack targets: the same for every variant and seed.
EVAL_SEED = 2014


@dataclass
class Robustness:
    """Average minimum distortion (the paper's RMS) over the test examples the attack succeeded on."""

    examples: int
    success_rate: float
    mean_distortion: float
    median_distortion: float


def min_distortion(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, target: str = "random",
                   attack: Callable | None = None, seed: int = EVAL_SEED) -> Robustness:
    """The robustness of ``model`` on ``images``: the attack's minimal RMS distortion, averaged.

    ``target="random"`` aims each image at a class drawn with ``seed`` (the same classes for every
    model given the same labels), ``"untargeted"`` at its closest wrong class. ``attack`` defaults
    to the paper's: :class:`~intriguing.attacks.LBFGS` with :meth:`LBFGSConfig.paper` (the ``c``
    search of Section 4.1, unrefined), so "before" and "after" are measured as the paper measures
    distortions. Pass the model in eval mode.
    """
    if target not in TARGETS:
        raise IntriguingError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    if target == "untargeted":
        criterion = Untargeted(labels)
    else:
        criterion = Targeted(seeding.random_targets(labels, output_classes(model, images), seed=seed), labels)
    attack = attack if attack is not None else LBFGS(LBFGSConfig.paper())
    summary = attack_layer(model, INPUT, images, criterion, attack).summary()
    return Robustness(examples=len(images), success_rate=summary["success_rate"],
                      mean_distortion=summary["mean_distortion"], median_distortion=summary["median_distortion"])
