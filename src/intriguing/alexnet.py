"""The ImageNet network of Krizhevsky et al. 2012, with the layer sizes of the paper's Table 5 (Section 4.3).

Szegedy et al. bound the layers of this network: five convolutions (3x11x11x96 stride 4,
96x5x5x256, 256x3x3x384, 384x3x3x384, 384x3x3x256) and three fully connected layers
(9216x4096, 4096x4096, 4096x1000), with ReLUs, local response normalisation after the first two
convolutions and *overlapping* 3x3 stride-2 max pooling. No ImageNet weights ship with this
toolkit: :func:`alexnet` gives seeded random weights, or loads yours (safetensors, or a state dict
with this module's names and shapes).

The input is 3x227x227: the size for which the first layer's 55x55 maps come out without padding
(Krizhevsky et al. wrote 224). Normalisation follows Caffe's convention ``alpha / n`` (PyTorch's
``LocalResponseNorm``), the one of the widely used converted weights; ``groups=2`` gives the
original two-GPU connectivity of conv2, conv4 and conv5 (weights shaped e.g. 256x48x5x5) instead of
Table 5's full one.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from intriguing import seeding
from intriguing.checkpoint import load_weights
from intriguing.errors import IntriguingError

INPUT_SHAPE = (3, 227, 227)
CLASSES = 1000
# The layers of the paper's Table 5, in its row order ("Conv. 1" ... "FC. 3").
TABLE5_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3")


def _normalisation() -> nn.LocalResponseNorm:
    """Krizhevsky et al.'s response normalisation: n = 5, alpha = 1e-4, beta = 0.75, k = 2."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


def _pool() -> nn.MaxPool2d:
    """Overlapping pooling: 3x3 windows every 2 pixels."""
    return nn.MaxPool2d(kernel_size=3, stride=2)


def untrained(groups: int = 1, dropout: float = 0.5) -> nn.Sequential:
    """The untrained network (PyTorch's default initialisation), mapping (N, 3, 227, 227) to 1000 logits."""
    if groups not in (1, 2):
        raise IntriguingError(f"groups: expected 1 (Table 5's sizes) or 2 (the original two-GPU split), got {groups!r}")
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 96, 11, stride=4), relu1=nn.ReLU(), norm1=_normalisation(), pool1=_pool(),
        conv2=nn.Conv2d(96, 256, 5, padding=2, groups=groups), relu2=nn.ReLU(), norm2=_normalisation(), pool2=_pool(),
        conv3=nn.Conv2d(256, 384, 3, padding=1), relu3=nn.ReLU(),
        conv4=nn.Conv2d(384, 384, 3, padding=1, groups=groups), relu4=nn.ReLU(),
        conv5=nn.Conv2d(384, 256, 3, padding=1, groups=groups), relu5=nn.ReLU(), pool5=_pool(),
        flatten=nn.Flatten(),
        fc1=nn.Linear(256 * 6 * 6, 4096), relu6=nn.ReLU(), drop6=nn.Dropout(dropout),
        fc2=nn.Linear(4096, 4096), relu7=nn.ReLU(), drop7=nn.Dropout(dropout),
        fc3=nn.Linear(4096, CLASSES),
    ))


def alexnet(weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None, *, seed: int = 0,
            groups: int = 1) -> nn.Sequential:
    """AlexNet in eval mode: your ``weights`` (safetensors path or state dict), else seeded random ones.

    A weight of the wrong shape is an error listing the checkpoint's shape and the model's, e.g.
    ``conv2.weight: checkpoint (256, 48, 5, 5) vs model (256, 96, 5, 5)`` (then try ``groups=2``).
    """
    with seeding.seeded(seed):
        model = untrained(groups)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()
