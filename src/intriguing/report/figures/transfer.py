"""Fig. 7 of Szegedy et al. 2014 (Section 4.2): adversarial examples beside Gaussian noise of the same size.

The data come from :func:`intriguing.transfer.noise_comparison`; this module only draws them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from intriguing import transfer
from intriguing.report.figures import pyplot, save

PANELS = 4  # original, adversarial, difference, noise
TITLE = ("original (true class; the model's if it differs) · adversarial (→ class, RMS) · difference · Gaussian "
         "noise with stddev = the model's mean adversarial RMS (class, RMS after clipping to [0, 1])")


def adversarial_figure(models: Mapping[str, nn.Module], x: torch.Tensor, adversarial: Mapping[str, torch.Tensor], *,
                       examples: int = 3, seed: int = 0, labels: torch.Tensor | None = None) -> Any:
    """A Fig. 7-like grid: one row per model; per example the original, the adversarial example,
    their difference magnified (grey is 0, black and white the example's largest change), and
    Gaussian noise whose stddev is the model's mean adversarial distortion. Titles give the model's
    class (and the realised RMS).

    ``adversarial`` maps a name of ``models`` to that model's adversarial versions of ``x`` (grey or
    RGB images); see :func:`intriguing.transfer.noise_comparison` for which examples are shown.
    ``labels`` (the true classes of ``x``) title each original with its true class, and the model's
    class beside it when the model gets the original wrong.
    """
    rows = transfer.noise_comparison(models, x, adversarial, examples=examples, seed=seed)
    shown = len(next(iter(rows.values())).shown)
    figure = pyplot().figure(figsize=(0.95 * PANELS * shown, 1.25 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), PANELS * shown, squeeze=False)
    for row, (name, panels) in enumerate(rows.items()):
        for j in range(shown):
            true = None if labels is None else int(labels[panels.shown[j]])
            for p, (image, title) in enumerate(_panels(panels, j, true)):
                _show(axes[row, PANELS * j + p], image, title)
        axes[row, 0].set_ylabel(name, fontsize=7)
    figure.suptitle(TITLE, fontsize=8)
    return figure


def save_adversarial_figure(path: str | Path, models: Mapping[str, nn.Module], x: torch.Tensor,
                            adversarial: Mapping[str, torch.Tensor], *, examples: int = 3, seed: int = 0,
                            labels: torch.Tensor | None = None) -> Path:
    """Draw :func:`adversarial_figure` and write it as a PNG to ``path``."""
    return save(adversarial_figure(models, x, adversarial, examples=examples, seed=seed, labels=labels), path)


def _panels(c: transfer.NoiseComparison, j: int, true: int | None = None) -> list[tuple[torch.Tensor, str]]:
    """The four images of example ``j`` with their titles (the original's: its true class when known)."""
    clean, attacked, noisy = (int(classes[j]) for classes in c.classes)
    original = f"{clean}" if true is None else f"{true}" if true == clean else f"{true} (model: {clean})"
    return [
        (c.clean[j], original),
        (c.adversarial[j], f"→{attacked} ({c.rms[0][j]:.3f})"),
        (c.difference[j], "difference"),
        (c.noisy[j], f"noise: {noisy} ({c.rms[1][j]:.3f})"),
    ]


def _show(ax: Any, image: torch.Tensor, title: str) -> None:
    ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)  # CHW -> HW(C)
    ax.set_title(title, fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
