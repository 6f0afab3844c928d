"""Refinement beyond the paper: move each adversarial example towards ``x`` along the decision boundary.

The paper's ``c`` search returns the minimiser of ``c |r|^2 + loss`` for the largest adversarial
``c``. That point is adversarial but not the *closest* adversarial point: the cross-entropy's
gradient mixes the directions of every class, so ``r`` is not the shortest way across the
boundary. Section 4.1's real question is Eq. 1, ``min ||r|| s.t. f(x + r) = l, x + r in the box``.

Each refinement step linearises the class margins that decide success at the current point ``u``
(``m_j(u) = z_l(u) - z_j(u)`` for the strongest competitors ``j``) and jumps to the closest point to
``x`` in the box where the linearised margins reach a small positive ``delta``::

    minimise ||u' - x||^2  s.t.  m_j(u) + grad m_j(u) . (u' - u) >= delta,  low <= u' <= high,

a sequential-quadratic-programming step for Eq. 1. For a linear model it is the exact optimum in
one step (the exact QP of :func:`~intriguing.attacks.exact_linear`); for a network it converges to
a point where the perturbation is normal to the boundary. Every step is verified by the model and
the closest adversarial point seen is kept, so refining never makes a result worse.

Two rules keep the cost down where the linear model does not hold. Gradients at a point are
computed only for the rows that step on from it: a row's last evaluation, or one where it stops,
is a forward pass. And a row stops when a step fails and its margins missed their linearisation by
more than :data:`HOPELESS` of the most they could change to first order over the step: on
EfficientNet-Lite0 at 3x224x224 the margins are so curved at the steps' length that every step
missed by 5-8 logits and none ever succeeded; there the refinement costs 6 evaluations per photo
instead of 30. On a ReLU network (a chain of ``Linear`` and ``ReLU`` layers) the refined points
then go through a local search over linear regions (:mod:`~intriguing.attacks.regions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from intriguing.attacks.criteria import Criterion
from intriguing.attacks.projection import (
    matvec,
    project_to_halfspace,
    solve_polyhedron,
)
from intriguing.attacks.regions import DELTA, region_search

COMPETITORS = 5  # margins linearised per targeted row: the target against the 5 strongest other classes
SETTLED = 1e-4  # a step that shrinks no row's squared distance by this fraction ends the refinement
# A step that fails, and whose margins missed their linearisation by this fraction of the most they could change to
# first order over the step, ends its row's refinement. Measured at the first step: MNIST FC100-100-10 at most 0.22
# (99%: 0.12); EfficientNet-Lite0 at 3x224x224, 0.39-0.70 on every photo, where no step ever succeeded.
HOPELESS = 0.3


@dataclass
class Refined:
    """Per row: the closest adversarial point after refinement, its squared distance, evaluations spent."""

    best: torch.Tensor
    best_sq: torch.Tensor
    evaluations: torch.Tensor


def refine(model: nn.Module, shape, x: torch.Tensor, start: torch.Tensor, start_sq: torch.Tensor,
           goal: torch.Tensor, true: torch.Tensor, criterion: Criterion, bounds: tuple[float, float],
           steps: int, batch_size: int, progress: bool = False) -> Refined:
    """Refine every row that has an adversarial ``start`` (finite ``start_sq``), ``batch_size`` rows at a
    time, with at most ``steps`` linearise-and-project steps, then, on a ReLU chain, at most ``steps``
    moves between linear regions."""
    best, best_sq = start.clone(), start_sq.clone()
    evaluations = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    todo = (torch.isfinite(start_sq) & (start_sq > 0)).nonzero().squeeze(1)  # distance 0 cannot improve
    if steps == 0 or len(todo) == 0:
        return Refined(best, best_sq, evaluations)
    margins = _Margins(model, tuple(shape), criterion)
    for chunk in tqdm(todo.split(batch_size), desc="attack (refine)", disable=None if progress else True,
                      leave=False):
        u, u_sq, spent = _refine_chunk(margins, x[chunk], best[chunk], goal[chunk], true[chunk], bounds, steps)
        best[chunk], best_sq[chunk] = u, u_sq
        evaluations[chunk] += spent
    best, best_sq, spent = region_search(model, shape, x, best, best_sq, goal, true, criterion, bounds, steps)
    return Refined(best, best_sq, evaluations + spent)


class _Margins:
    """The margins of each row's class ``l`` over its strongest rivals, their gradients, and whether a
    point counts as a success.

    The margins are ``z_l - z_j`` for the ``COMPETITORS`` largest other logits ``j``, in both modes:
    an untargeted row refines exactly like the targeted attack towards ``l`` and only records
    differently (any point no longer classified as ``y``; see :class:`~intriguing.attacks.lbfgs.Rows`).
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], criterion: Criterion):
        self.model, self.shape, self.criterion = model, shape, criterion

    def at(self, u: torch.Tensor, goal: torch.Tensor, true: torch.Tensor) -> _Point:
        """One forward pass at ``u`` (rows), keeping its graph for the gradients a row may still need."""
        with torch.enable_grad():
            point = u.detach().requires_grad_(True)
            logits = self.model(point.view(-1, *self.shape))
        return _Point(point, logits, goal, self.criterion.safely_reached(logits.detach(), true))


@dataclass
class _Point:
    """The model at a batch of points: logits (with their graph), each row's class ``goal``, success."""

    point: torch.Tensor
    logits: torch.Tensor
    goal: torch.Tensor
    adversarial: torch.Tensor

    def margins(self, rivals: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``z_l - z_j`` for the classes ``rivals`` (R, k) of the rows ``rows`` (default: all), detached."""
        logits, goal = self.logits.detach(), self.goal
        if rows is not None:
            logits, goal = logits[rows], goal[rows]
        return logits.gather(1, goal[:, None]) - logits.gather(1, rivals)

    def rivals(self, k: int) -> torch.Tensor:
        """The ``k`` strongest classes other than ``goal`` per row (B, k)."""
        others = self.logits.detach().scatter(1, self.goal[:, None], -math.inf)
        return others.topk(min(k, others.shape[1] - 1), dim=1).indices

    def gradients(self, rows: torch.Tensor, rivals: torch.Tensor) -> torch.Tensor:
        """The gradients (len(rows), k, m) of the margins over ``rivals`` (len(rows), k) of the rows ``rows``:
        one backward pass per rival, through the forward pass's graph."""
        with torch.enable_grad():
            logits = self.logits[rows]
            values = logits.gather(1, self.goal[rows, None]) - logits.gather(1, rivals)
            grads = [torch.autograd.grad(values[:, j].sum(), self.point, retain_graph=j + 1 < values.shape[1])[0]
                     for j in range(values.shape[1])]
        return torch.stack(grads, 1)[rows]


def _refine_chunk(margins: _Margins, x: torch.Tensor, start: torch.Tensor, goal: torch.Tensor,
                  true: torch.Tensor, bounds: tuple[float, float], steps: int):
    """Linearise-and-project from ``start`` for one chunk of rows; returns the best points, their
    squared distances and the evaluations spent per row: at each point a forward pass, and for a
    row that steps on from it, one more per linearised margin beyond the first (a forward pass and
    ``k`` gradients through it count ``k``).

    A row stops once a step lands on an adversarial point less than ``SETTLED`` closer than its
    best, or on a failed step whose linear model failed (:func:`_hopeless`); a row whose step fell
    short otherwise tries again with a doubled ``delta``.

    Each projection starts from the multipliers of the row's last one, matched by rival class: from one
    step to the next the binding margins and their weights barely change, so the dual Newton method
    needs about half the passes over the gradients (FC100-100-10, 1,000 MNIST rows) that it needs from 0.
    """
    low, high = bounds
    best, best_sq = start.clone(), (start - x).pow(2).sum(1)
    u = start.clone()
    delta = torch.full_like(best_sq, DELTA)
    spent = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    going = torch.arange(len(x), device=x.device)
    linear = None  # per going row, of its last step: the rivals, their linearised margins, slopes, the length
    multipliers = None  # per row and class, of its last projection: where the next one starts
    for step in range(steps + 1):
        at = margins.at(u[going], goal[going], true[going])
        spent[going] += 1
        adversarial = at.adversarial
        u_sq = (u[going] - x[going]).pow(2).sum(1)
        settled = adversarial & (u_sq >= (1 - SETTLED) * best_sq[going])
        better = adversarial & (u_sq < best_sq[going])
        best[going[better]], best_sq[going[better]] = u[going[better]], u_sq[better]
        if step == steps:
            break
        keep = torch.ones_like(adversarial)
        if linear is not None:
            rivals, predicted, slopes, length = linear
            keep = ~settled & ~(~adversarial & _hopeless(predicted - at.margins(rivals), slopes, length))
        rows = keep.nonzero().squeeze(1)
        going = going[rows]
        if len(going) == 0:
            break
        delta[going] = torch.where(adversarial[rows], delta[going], 2 * delta[going])
        rivals = at.rivals(COMPETITORS)[rows]
        values, grads = at.margins(rivals, rows), at.gradients(rows, rivals)
        spent[going] += values.shape[1] - 1
        # Linearised margins: values + grads . (u' - u) >= delta  <=>  grads . u' >= b.
        b = delta[going, None] - values + matvec(grads, u[going])
        if grads.shape[1] == 1:
            step_to = project_to_halfspace(x[going], grads[:, 0], b[:, 0], low, high)
        else:  # from the multipliers of the row's last projection, matched by class
            warm = None if multipliers is None else multipliers[going].gather(1, rivals)
            step_to, lam = solve_polyhedron(x[going], grads, b, low, high, warm)
            if multipliers is None:
                multipliers = lam.new_zeros(len(x), at.logits.shape[1])
            multipliers[going] = torch.zeros_like(multipliers[going]).scatter_(1, rivals, lam)
        move = step_to - u[going]
        linear = rivals, values + matvec(grads, move), grads.norm(dim=2), move.norm(dim=1)
        u[going] = step_to
    return best, best_sq, spent


def _hopeless(miss: torch.Tensor, slopes: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Rows whose linear model failed at the length of their last step: a margin missed its prediction by
    ``miss`` (R, k) logits, more than ``HOPELESS`` times the most a margin with that slope can change
    to first order over the step's ``length`` (the error of a linear model grows with the square of the
    step: where it matches the first-order change, the model no longer describes the step), and by
    more than ``DELTA`` (a tiny step that misses by rounding error is not a failure of the model)."""
    return (miss - HOPELESS * slopes * length[:, None] > DELTA).any(1)
