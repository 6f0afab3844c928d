"""A final step beyond the paper: shrink each adversarial example along its ray to the decision boundary.

The paper's ``c`` search (Section 4.1) returns the minimiser of ``c |r|^2 + loss`` for the largest
adversarial ``c`` it tried. On a large network the L-BFGS solves are cut short (``max_iter``, the
stall test) long before they converge, so that point is often well inside the target's region: on
EfficientNet-Lite0 at 3x224x224 its margin can be several logits, the direction of ``r`` good but
its length too long. Eq. 1 asks for the smallest ``r``, so this step keeps the direction and
searches the length: the smallest ``t`` in ``(0, 1]`` with ``x + t r`` still adversarial,
by regula falsi (Illinois) on the success margin between ``t = 0`` (the clean input) and ``t = 1``.
Each trial is one forward pass without a gradient, counted as one evaluation (about a third of
what a forward pass with its gradient costs). A point is kept only if the model confirms it
safely, so the step never makes a result worse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from intriguing.attacks.criteria import SAFE_MARGIN, Criterion

INSIDE = 0.05  # a trial lands at least this fraction of the bracket away from either end
AIM = 2 * SAFE_MARGIN  # the margin aimed at: just past what a search may record as adversarial
ON_BOUNDARY = 1e-2  # a start whose margin is at most this (logits) is left alone: e.g. refined ones


@dataclass
class Shrunk:
    """Per row: the closest adversarial point after shrinking, its squared distance, forward passes spent."""

    best: torch.Tensor
    best_sq: torch.Tensor
    evaluations: torch.Tensor


def shrink(model: nn.Module, shape, x: torch.Tensor, start: torch.Tensor, start_sq: torch.Tensor,
           true: torch.Tensor, criterion: Criterion, steps: int, batch_size: int) -> Shrunk:
    """Shrink every row that has an adversarial ``start`` (finite, positive ``start_sq``), ``batch_size``
    rows at a time: one forward pass of the start; where its margin exceeds ``ON_BOUNDARY``, one of
    the clean input and ``steps`` trials along the ray."""
    best, best_sq = start.clone(), start_sq.clone()
    evaluations = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    todo = (torch.isfinite(start_sq) & (start_sq > 0)).nonzero().squeeze(1)
    if steps == 0 or len(todo) == 0:
        return Shrunk(best, best_sq, evaluations)
    margin = RayMargin(model, tuple(shape), criterion)
    for chunk in todo.split(batch_size):
        m_start = margin(best[chunk], true[chunk])
        evaluations[chunk] += 1
        inside = m_start > ON_BOUNDARY
        rows = chunk[inside]
        if len(rows) == 0:
            continue
        u = best[rows]
        t = along_ray(margin, x[rows], u, true[rows], margin(x[rows], true[rows]), m_start[inside], steps)
        evaluations[rows] += steps + 1
        kept = t < 1
        rows, u, t = rows[kept], u[kept], t[kept]
        best[rows] = x[rows] + t[:, None] * (u - x[rows])
        best_sq[rows] = (best[rows] - x[rows]).pow(2).sum(1)
    return Shrunk(best, best_sq, evaluations)


class RayMargin:
    """The success margin of each row at a batch of points, by a forward pass without a gradient."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...], criterion: Criterion):
        self.model, self.shape, self.criterion = model, shape, criterion

    def __call__(self, u: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(u.view(-1, *self.shape))
        finite = torch.isfinite(logits).all(1)
        return torch.where(finite, self.criterion.margin(logits, true), torch.full_like(logits[:, 0], -torch.inf))


def along_ray(margin: Callable, x: torch.Tensor, u: torch.Tensor, true: torch.Tensor, m_clean: torch.Tensor,
              m_start: torch.Tensor, steps: int) -> torch.Tensor:
    """Regula falsi (Illinois) on the margin along ``x + t (u - x)`` from the bracket ``[0, 1]``, whose
    margins ``m_clean < 0 < m_start`` are known: the smallest confirmed ``t`` per row after ``steps``
    forward passes (1 where none was adversarial). Margins are measured less ``AIM``."""
    m_fail, m_adv = m_clean.clamp_min(-1e6) - AIM, m_start - AIM  # a non-finite clean margin: a very negative one
    t_fail, t_adv = torch.zeros_like(m_fail), torch.ones_like(m_adv)
    side = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    usable = (m_adv > SAFE_MARGIN - AIM) & (m_fail < SAFE_MARGIN - AIM)
    r = u - x
    for _ in range(steps):
        theta = m_adv / (m_adv - m_fail).clamp_min(1e-12)  # the root of the line through both ends, from t_adv
        width = t_adv - t_fail
        t = (t_adv - theta * width).clamp(t_fail + INSIDE * width, t_adv - INSIDE * width)
        m = margin(x + t[:, None] * r, true) - AIM
        adv = usable & (m > SAFE_MARGIN - AIM)
        fail = usable & ~adv
        m_fail = torch.where(adv & (side == 1), m_fail / 2, m_fail)  # Illinois: the same end moved twice
        m_adv = torch.where(fail & (side == -1), m_adv / 2, m_adv)
        t_adv, m_adv = torch.where(adv, t, t_adv), torch.where(adv, m, m_adv)
        t_fail, m_fail = torch.where(fail, t, t_fail), torch.where(fail, m, m_fail)
        side = torch.where(adv, 1, torch.where(fail, -1, side))
    return torch.where(usable, t_adv, torch.ones_like(t_adv))
