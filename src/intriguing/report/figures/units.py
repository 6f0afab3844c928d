"""Figures of Section 3: the top-k images of units and of random directions (Figs 1-2), and purity histograms.

The rows of a grid are chosen by a fixed rule (:func:`figure_rows`), never by hand: the paper's
figures show hand-picked examples, which is exactly what a fair comparison must avoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intriguing.report.figures import pyplot, save
from intriguing.units import UNITS, DirectionMetrics, LayerAnalysis, UnitStudy


def figure_rows(metrics: DirectionMetrics, rows: int) -> list[int]:
    """The fixed rule picking a figure's directions: the first ``rows`` non-constant ones, never hand-picked.

    For units these are the first units; for a random law, the first draws of its seeded sample
    (positive signs come first, see :func:`intriguing.units.both_signs`).
    """
    return np.flatnonzero(~metrics.constant)[:rows].tolist()


def _mosaic(images: torch.Tensor, top: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tile the top-k images of each chosen direction: one row per direction, best image first."""
    rows, k = top.shape
    h, w = images.shape[-2:]
    tiles = images[torch.from_numpy(top).flatten(), 0].numpy().reshape(rows, k, h, w)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (0, gap), (0, gap)), constant_values=0.5)  # grey gaps
    return tiles.transpose(0, 2, 1, 3).reshape(rows * (h + gap), k * (w + gap))[:-gap, :-gap]


def _panel(ax: Any, images: torch.Tensor, labels: torch.Tensor, metrics: DirectionMetrics, family: str,
           k: int, rows: int) -> None:
    """One family's panel: its chosen directions' top-k images, each tagged with its label in yellow."""
    chosen = figure_rows(metrics, rows)
    h = images.shape[-2] + 2
    ax.imshow(_mosaic(images, metrics.top[chosen]), cmap="gray", vmin=0, vmax=1)
    noun = "unit" if family == UNITS else "direction"
    ax.set_yticks([r * h + h / 2 - 1 for r in range(len(chosen))],
                  [f"{noun} {i}\npurity {metrics.purity[i]:.2f}" for i in chosen], fontsize=7)
    ax.set_xticks([])
    ax.set_title(f"{family} (top {k})", fontsize=9)
    for r, i in enumerate(chosen):
        for c in range(k):
            ax.text(c * h + 1, r * h + 6, str(int(labels[metrics.top[i, c]])), color="yellow", fontsize=6)


def save_grid(
    path: str | Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    analysis: LayerAnalysis,
    families: Sequence[str] = (UNITS, "gaussian"),
    rows: int = 4,
    title: str = "",
) -> Path:
    """Figs 1-2 of the paper for one layer: per family a panel whose rows are directions chosen by
    :func:`figure_rows` and whose columns are their top-k images, each tagged with its label."""
    k = analysis.k
    fig, axes = pyplot().subplots(1, len(families), figsize=(len(families) * (0.55 * k + 1.6), 0.6 * rows + 1.0),
                                  squeeze=False)
    for ax, family in zip(axes[0], families):
        _panel(ax, images, labels, analysis.families[family], family, k, rows)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def save_purity_distributions(path: str | Path, studies: Sequence[UnitStudy]) -> Path:
    """The purity distribution of units, of every random law and of random images, one panel per study."""
    fig, axes = pyplot().subplots(1, len(studies), figsize=(3.6 * len(studies), 3.0), squeeze=False, sharey=True)
    for ax, study in zip(axes[0], studies):
        levels = np.arange(1, study.k + 1) / study.k
        for summary in study.families:
            style = {"linewidth": 2.5, "color": "black"} if summary.family == UNITS else {"linewidth": 1.2}
            ax.plot(levels, summary.purity_levels, marker="o", markersize=3, label=summary.family, **style)
        ax.set_title(f"{study.model} / {study.layer} ({study.variant})", fontsize=9)
        ax.set_xlabel(f"top-{study.k} purity")
    axes[0][0].set_ylabel("share of directions")
    axes[0][-1].legend(fontsize=7)
    return save(fig, path)
