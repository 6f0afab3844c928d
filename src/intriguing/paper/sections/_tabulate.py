"""The rows of Tables 2 and 4 (Section 4.2): each model's adversarial examples and the noise controls, fed to all.

A model's adversarial row counts only the examples that model classifies correctly (the rest need
no perturbation to fool it; :class:`~intriguing.paper.sections._transfer.Prepared`), and so do its
amplified row; a noise row counts every drawn example, as the paper's noise rows do.

The noise rows come twice: at the paper's nominal stddev (``x + N(0, stddev²)`` clipped to
[0, 1], whose realised RMS is lower: ≈0.074 for 0.1 on MNIST) and *matched*, the same draw
scaled per example so that its realised RMS after clipping is the stated value. The claims
compare against the matched rows, so "noise of size s" means size s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from intriguing.attacks.controls import matched_gaussian_noise
from intriguing.paper.sections._transfer import Prepared, TransferExperiment, TransferSettings, prepare
from intriguing.paper.tables import paper
from intriguing.runner import Context
from intriguing.stats import mean_interval, wilson_interval
from intriguing.transfer import (TransferTable, amplified_row, amplified_rows, gaussian_row, noise_rows,
                                 transfer_table)


def matched_row(rms: float) -> str:
    """Row name of Gaussian noise scaled to a realised RMS of ``rms`` after clipping (ours, not the paper's)."""
    return f"Gaussian noise, realised RMS={rms:g}"


def matched_rows(x: torch.Tensor, noise: Sequence[float], matched: Sequence[float],
                 seed: int) -> dict[str, torch.Tensor]:
    """Matched noise rows; each reuses the draw of the nominal row of the same size (seed ``seed + i``)."""
    seeds = {stddev: seed + i for i, stddev in enumerate(noise)}
    return {matched_row(rms): matched_gaussian_noise(x, rms, seeds.get(rms, seed + len(noise) + i))
            for i, rms in enumerate(matched)}


def noise_seeds(noise: Sequence[float], matched: Sequence[float], seed: int) -> dict[str, int]:
    """The seed of every noise row's draw, by row name (stored with the results)."""
    nominal = {gaussian_row(sd): seed + i for i, sd in enumerate(noise)}
    return {**nominal, **{matched_row(rms): nominal.get(gaussian_row(rms), seed + len(noise) + i)
                          for i, rms in enumerate(matched)}}


def transfer_result(ctx: Context, s: TransferSettings, experiment: TransferExperiment, noise: Sequence[float],
                    amplify_to: float | None, matched: Sequence[float] = ()) -> tuple[Prepared, TransferTable]:
    """Tables 2 and 4: the experiment's adversarial sets and controls fed to all its models."""
    prepared = prepare(ctx, s, experiment, share=0.8)
    ctx.stage("feed every row to every model", 0.85)
    controls = {**noise_rows(prepared.x, noise, s.seed), **matched_rows(prepared.x, noise, matched, s.seed)}
    parts = [transfer_table(prepared.models, controls, prepared.x, prepared.y)]
    parts += [_model_rows(prepared, column, amplify_to) for column in prepared.adversarial]
    first = parts[0]
    rows = {row: cells for part in parts[1:] + [first] for row, cells in part.rows.items()}
    distortion = {row: d for part in parts[1:] + [first] for row, d in part.distortion.items()}
    return prepared, TransferTable(columns=first.columns, rows=rows, distortion=distortion, n=first.n)


def _model_rows(prepared: Prepared, column: str, amplify_to: float | None) -> TransferTable:
    """``column``'s adversarial row (and amplified row) over the examples its model classifies correctly."""
    keep = prepared.correct[column]
    x, y = prepared.x[keep], prepared.y[keep]
    rows = {column: prepared.adversarial[column].adversarial[keep]}
    if not len(x):  # the model gets every drawn example wrong: nothing to count, nothing to amplify
        names = [column] + ([amplified_row(column, amplify_to)] if amplify_to is not None else [])
        nothing = {c: wilson_interval(0, 0) for c in prepared.models}
        return TransferTable(list(prepared.models), {row: dict(nothing) for row in names},
                             {row: mean_interval([]) for row in names}, 0)
    if amplify_to is not None:
        rows.update(amplified_rows(x, rows, amplify_to))
    return transfer_table(prepared.models, rows, x, y)


def in_paper_order(key: str, rows: Mapping[str, Any]) -> dict[str, Any]:
    """``rows`` ordered as the paper's table ``key`` lists them (the paper interleaves noise and amplified
    rows), then our rows the paper lacks (matched noise, Fig. 7(c)'s noise) in their own order."""
    listed = list(paper(key)["rows"])
    return {**{name: rows[name] for name in listed}, **{name: v for name, v in rows.items() if name not in listed}}
