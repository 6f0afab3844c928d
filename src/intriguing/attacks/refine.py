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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from intriguing.attacks.base import SAFE_MARGIN, safely_reached

COMPETITORS = 5  # margins linearised per targeted row: the target against the 5 strongest other classes
DELTA = 2 * SAFE_MARGIN  # logit margin aimed for; doubled for a row whose last step fell short
SETTLED = 1e-4  # a step that shrinks no row's squared distance by this fraction ends the refinement


@dataclass
class Refined:
    """Per row: the closest adversarial point after refinement, its squared distance, evaluations spent."""

    best: torch.Tensor
    best_sq: torch.Tensor
    evaluations: torch.Tensor


def refine(model: nn.Module, shape, x: torch.Tensor, start: torch.Tensor, start_sq: torch.Tensor,
           goal: torch.Tensor, true: torch.Tensor, targeted: bool, bounds: tuple[float, float],
           steps: int, batch_size: int, progress: bool = False) -> Refined:
    """Refine every row that has an adversarial ``start`` (finite ``start_sq``), ``batch_size`` rows at a
    time, with at most ``steps`` linearise-and-project steps."""
    best, best_sq = start.clone(), start_sq.clone()
    evaluations = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    todo = (torch.isfinite(start_sq) & (start_sq > 0)).nonzero().squeeze(1)  # distance 0 cannot improve
    if steps == 0 or len(todo) == 0:
        return Refined(best, best_sq, evaluations)
    margins = _Margins(model, tuple(shape), targeted)
    for chunk in tqdm(todo.split(batch_size), desc="attack (refine)", disable=not progress, leave=False):
        u, u_sq, spent = _refine_chunk(margins, x[chunk], best[chunk], goal[chunk], true[chunk], bounds, steps)
        best[chunk], best_sq[chunk] = u, u_sq
        evaluations[chunk] += spent
    return Refined(best, best_sq, evaluations)


class _Margins:
    """The margins of each row's class ``l`` over its strongest rivals at ``u``, their gradients, and
    whether ``u`` counts as a success.

    The margins are ``z_l - z_j`` for the ``COMPETITORS`` largest other logits ``j``, in both modes:
    an untargeted row refines exactly like the targeted attack towards ``l`` and only records
    differently (any point no longer classified as ``y``; see :class:`~intriguing.attacks.lbfgs.Rows`).
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], targeted: bool):
        self.model, self.shape, self.targeted = model, shape, targeted

    def __call__(self, u: torch.Tensor, goal: torch.Tensor, true: torch.Tensor):
        with torch.enable_grad():
            point = u.detach().requires_grad_(True)
            logits = self.model(point.view(-1, *self.shape))
            rivals = self._rivals(logits.detach(), goal)  # (B, k)
            values = logits.gather(1, goal[:, None]) - logits.gather(1, rivals)  # (B, k)
            grads = [torch.autograd.grad(values[:, j].sum(), point, retain_graph=j + 1 < values.shape[1])[0]
                     for j in range(values.shape[1])]
        return values.detach(), torch.stack(grads, 1), safely_reached(logits.detach(), true, self.targeted)

    @staticmethod
    def _rivals(logits: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        k = min(COMPETITORS, logits.shape[1] - 1)
        others = logits.scatter(1, goal[:, None], -math.inf)
        return others.topk(k, dim=1).indices


def _refine_chunk(margins: _Margins, x: torch.Tensor, start: torch.Tensor, goal: torch.Tensor,
                  true: torch.Tensor, bounds: tuple[float, float], steps: int):
    """Linearise-and-project from ``start`` for one chunk of rows; returns the best points, their
    squared distances and the gradient evaluations spent per row (one per linearised margin).

    A row stops once a step lands on an adversarial point less than ``SETTLED`` closer than its
    best; a row whose step fell short of adversarial tries again with a doubled ``delta``.
    """
    low, high = bounds
    best, best_sq = start.clone(), (start - x).pow(2).sum(1)
    u = start.clone()
    delta = torch.full_like(best_sq, DELTA)
    spent = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    going = torch.arange(len(x), device=x.device)
    for step in range(steps + 1):
        values, grads, adversarial = margins(u[going], goal[going], true[going])
        spent[going] += values.shape[1]
        u_sq = (u[going] - x[going]).pow(2).sum(1)
        settled = adversarial & (u_sq >= (1 - SETTLED) * best_sq[going])
        better = adversarial & (u_sq < best_sq[going])
        best[going[better]], best_sq[going[better]] = u[going[better]], u_sq[better]
        if step == steps:
            break
        keep = ~settled if step > 0 else torch.ones_like(settled)
        going, values, grads = going[keep], values[keep], grads[keep]
        delta[going] = torch.where(adversarial[keep], delta[going], 2 * delta[going])
        if len(going) == 0:
            break
        # Linearised margins: values + grads . (u' - u) >= delta  <=>  grads . u' >= b.
        b = delta[going, None] - values + torch.einsum("bkm,bm->bk", grads, u[going])
        u[going] = project_to_halfspace(x[going], grads[:, 0], b[:, 0], low, high) if grads.shape[1] == 1 else \
            project_to_polyhedron(x[going], grads, b, low, high)
    return best, best_sq, spent


def project_to_halfspace(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per row, the point of the box closest to ``x`` with ``a . u >= b`` (a (B, m), b (B,)), exactly.

    The solution is ``u = clip(x + lam a)`` for the smallest ``lam >= 0`` that satisfies the
    constraint. ``phi(lam) = a . clip(x + lam a)`` is piecewise linear and nondecreasing: coordinate
    ``i`` moves (adding ``a_i^2`` to the slope) until it hits its bound at ``t_i``. Sorting the
    ``t_i`` gives ``phi`` at every breakpoint by cumulative sums, hence the segment holding the root
    and the root itself, with no iteration. If even the far corner of the box falls short, ``u`` is
    that corner (the closest the box gets).
    """
    bound = torch.where(a > 0, high - x, low - x)
    nonzero = a != 0
    t = torch.where(nonzero, bound / torch.where(nonzero, a, torch.ones_like(a)), torch.zeros_like(a))
    t, order = t.clamp_min(0).sort(1)
    w = a.gather(1, order).pow(2)
    wt = w * t
    w_before = w.cumsum(1) - w  # slope still missing before breakpoint j
    wt_before = wt.cumsum(1) - wt
    start = (a * x).sum(1)
    total = w.sum(1)
    phi = start[:, None] + wt_before + t * (total[:, None] - w_before)  # phi at each breakpoint
    hit = phi >= b[:, None]
    j = hit.to(torch.int8).argmax(1, keepdim=True)
    slope = (total - w_before.gather(1, j)[:, 0]).clamp_min(torch.finfo(x.dtype).tiny)
    lam = (b - start - wt_before.gather(1, j)[:, 0]) / slope
    lam = torch.where(hit.any(1), lam.clamp_min(0), t[:, -1])
    return (x + lam[:, None] * a).clamp(low, high)


def project_to_polyhedron(x: torch.Tensor, A: torch.Tensor, b: torch.Tensor, low: float, high: float,
                          tol: float = 1e-7, iterations: int = 30) -> torch.Tensor:
    """Per row, the point of the box closest to ``x`` with ``A u >= b`` (k half-spaces; A (B, k, m), b (B, k)).

    Solved through the dual, ``max_{lam >= 0} D(lam)`` with ``u(lam) = clip(x + A^T lam)``: a concave,
    piecewise-quadratic function of only ``k`` variables per row. Projected Newton steps (the
    Hessian is ``A_F A_F^T`` over the unclipped coordinates ``F``, restricted to the constraints that
    are violated or carry a multiplier) with a backtracking line search find the active pieces in a
    few iterations. Works in float64 on the displacement ``p = u - x`` so that the constraint values
    keep their precision; rows stop when their KKT residual is below ``tol`` (constraint units).
    Where the half-spaces cannot be reached inside the box, ``u`` ends at the closest box point found.
    """
    dtype = x.dtype
    x, A = x.double(), A.double()
    beta = b.double() - torch.einsum("bkm,bm->bk", A, x)  # A p >= beta with p = u - x
    p_low, p_high = low - x, high - x
    batch, k, _ = A.shape
    lam = torch.zeros(batch, k, device=x.device, dtype=x.dtype)
    eye = torch.eye(k, device=x.device, dtype=x.dtype)

    def displacement(multipliers):
        v = torch.einsum("bk,bkm->bm", multipliers, A)
        return v, torch.minimum(torch.maximum(v, p_low), p_high)

    def dual(multipliers):
        p = displacement(multipliers)[1]
        return 0.5 * p.pow(2).sum(1) - (multipliers * (torch.einsum("bkm,bm->bk", A, p) - beta)).sum(1)

    for _ in range(iterations):
        v, p = displacement(lam)
        violation = beta - torch.einsum("bkm,bm->bk", A, p)  # dD/dlam
        residual = (lam - (lam + violation).clamp_min(0)).abs().amax(1)
        going = residual > tol * (1 + beta.abs().amax(1))
        if not going.any():
            break
        working = (lam > 0) | (violation > 0)
        free = ((v > p_low) & (v < p_high)).to(x.dtype)
        hessian = torch.einsum("bkm,bjm->bkj", A * free[:, None], A)
        scale = torch.einsum("bkm,bkm->b", A, A)[:, None, None] / k
        pair = working[:, :, None] & working[:, None, :]
        hessian = torch.where(pair, hessian, eye * scale) + 1e-10 * scale * eye
        direction = torch.linalg.solve(hessian, torch.where(working, violation, torch.zeros_like(violation)))
        direction = torch.where(going[:, None], direction, torch.zeros_like(direction))
        lam = _dual_line_search(lam, direction, dual(lam), dual)
    return (x + displacement(lam)[1]).to(dtype)


def _dual_line_search(lam, direction, current, dual_at, halvings: int = 12):
    """Largest step ``t in {1, 1/2, ...}`` along ``direction`` (projected onto ``lam >= 0``) that does not lower D."""
    step = torch.ones_like(current)
    pending = torch.ones_like(current, dtype=torch.bool)
    result = lam
    for _ in range(halvings):
        candidate = (lam + step[:, None] * direction).clamp_min(0)
        ok = pending & (dual_at(candidate) >= current - 1e-12 * current.abs().clamp_min(1))
        result = torch.where(ok[:, None], candidate, result)
        pending = pending & ~ok
        if not pending.any():
            break
        step = step / 2
    return result
