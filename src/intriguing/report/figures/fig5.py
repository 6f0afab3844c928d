"""Fig. 5 of the paper: an image, its adversarial version, and the difference between them magnified.

Szegedy et al. (Section 4.1, Fig. 5) show for AlexNet the correctly predicted image (left), the
difference magnified ten times (centre) and the adversarial image (right), all predicted "ostrich".
Here each row is one example, in the order original, adversarial, difference, each titled with
the model's class; the difference is drawn as ``0.5 + magnify * (adversarial - original)`` clipped to
[0, 1], so grey is no change and the same magnification holds for every row, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from intriguing.report.figures import pyplot, save

MAGNIFY = 10.0  # the paper's "magnified by 10x"
MAX_ROWS = 8


def magnified_difference(original: torch.Tensor, adversarial: torch.Tensor, magnify: float = MAGNIFY) -> torch.Tensor:
    """The perturbation as an image in [0, 1]: grey (0.5) where nothing changed."""
    return (0.5 + magnify * (adversarial - original)).clamp(0.0, 1.0)


def _show(ax, image: torch.Tensor, title: str) -> None:
    """One panel: (C, H, W) in [0, 1] as grey or RGB, without axes."""
    array = image.detach().float().cpu().numpy()
    if array.shape[0] == 1:
        ax.imshow(array[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(array.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def save_fig5(path: str | Path, original: torch.Tensor, adversarial: torch.Tensor,
              original_classes: Sequence[str], adversarial_classes: Sequence[str], *,
              distortions: Sequence[float] | None = None, magnify: float = MAGNIFY, title: str = "") -> Path:
    """Write the grid for up to :data:`MAX_ROWS` examples: original, adversarial, magnified difference.

    ``original`` and ``adversarial`` are (N, C, H, W) in [0, 1]; the class lists name the model's
    prediction for each; ``distortions`` (RMS, the paper's measure) are written under the adversarial.
    """
    rows = min(len(original), MAX_ROWS)
    fig, axes = pyplot().subplots(rows, 3, figsize=(6.3, 2.2 * rows), squeeze=False)
    for r in range(rows):
        _show(axes[r, 0], original[r], f"original: {original_classes[r]}")
        extra = f"\nRMS {distortions[r]:.4f}" if distortions is not None else ""
        _show(axes[r, 1], adversarial[r], f"adversarial: {adversarial_classes[r]}{extra}")
        _show(axes[r, 2], magnified_difference(original[r], adversarial[r], magnify),
              f"difference x{magnify:g}")
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)
