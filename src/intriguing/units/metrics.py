"""How coherent a direction is: scores from the labels of the images it ranks first, and of all images.

Section 3 of the paper judges coherence by eye from the top images of a direction (Figs 1-2). Here
it is measured on MNIST labels: the purity and label entropy of the top-k images, and the class
selectivity of the projection over all images (Morcos et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

METRICS = ("purity", "entropy", "selectivity")
# +1 where a larger value means a more coherent direction, -1 where a smaller one does.
COHERENT_SIGN = {"purity": 1, "entropy": -1, "selectivity": 1}


@dataclass
class DirectionMetrics:
    """The coherence of every direction of one family; arrays hold one entry per direction.

    ``top`` (D, k) holds each direction's top-k image indices, best first. ``constant`` marks
    directions whose projection is the same for every image (a dead unit, a blank pixel): they
    have no top-k, so every statistic leaves them out.
    """

    purity: np.ndarray
    entropy: np.ndarray
    selectivity: np.ndarray
    top: np.ndarray
    constant: np.ndarray

    def values(self, metric: str) -> np.ndarray:
        """The ``metric`` of the directions that vary over the images."""
        return getattr(self, metric)[~self.constant]

    def table(self) -> np.ndarray:
        """All :data:`METRICS` of the non-constant directions, (n, len(METRICS))."""
        return np.stack([self.values(metric) for metric in METRICS], axis=1)


def _class_selectivity(rows: torch.Tensor, low: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Morcos et al. (2018)'s class-selectivity index of each direction (rows (D, N)), in [0, 1].

    ``(mu_max - mu_rest) / (mu_max + mu_rest)`` with ``mu_max`` the largest class mean of the
    projection and ``mu_rest`` the mean of the other class means. The index is defined for ReLU units
    (non-negative); a projection on a random direction is not, so each projection is first shifted to
    minimum 0 over the images (``low``). That leaves a ReLU unit that is zero on some image unchanged
    and makes the index blind to the offset that centring adds.
    """
    onehot = torch.nn.functional.one_hot(labels).to(rows.dtype)
    onehot = onehot[:, onehot.sum(0) > 0]  # classes absent from the images have no mean
    means = (rows @ onehot) / onehot.sum(0) - low[:, None]  # (D, C): class means of the shifted projection
    best = means.max(1).values
    rest = (means.sum(1) - best) / (means.shape[1] - 1)
    return ((best - rest) / (best + rest)).double().numpy()


def direction_metrics(scores: torch.Tensor, labels: torch.Tensor, k: int) -> DirectionMetrics:
    """Top-k purity, top-k label entropy (bits) and class selectivity of every column of ``scores``.

    ``scores`` (N, D) holds the projections ``<phi(x), d>`` of N images on D directions. Purity is the
    share of the majority label among a direction's top-k images (1: all the same digit); entropy is
    the Shannon entropy of their labels (0: all the same digit). Ties in the ranking (e.g. a ReLU
    unit that is zero on many images) are broken by ``torch.topk``, deterministically.
    """
    rows = scores.T.contiguous()  # (D, N): every reduction below runs along contiguous memory
    low, high = torch.aminmax(rows, dim=1)
    top = rows.topk(k, dim=1).indices  # (D, k)
    counts = torch.nn.functional.one_hot(labels[top]).sum(1).double()  # (D, classes)
    shares = counts / k
    entropy = -(shares * torch.log2(shares.clamp_min(1e-300))).sum(1)
    return DirectionMetrics(
        purity=(counts.max(1).values / k).numpy(),
        entropy=entropy.clamp_min(0.0).numpy(),
        selectivity=_class_selectivity(rows, low, labels),  # NaN for constant directions
        top=top.numpy(),
        constant=(low == high).numpy(),
    )
