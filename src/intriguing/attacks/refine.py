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

from intriguing.attacks.criteria import SAFE_MARGIN, Criterion

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
           goal: torch.Tensor, true: torch.Tensor, criterion: Criterion, bounds: tuple[float, float],
           steps: int, batch_size: int, progress: bool = False) -> Refined:
    """Refine every row that has an adversarial ``start`` (finite ``start_sq``), ``batch_size`` rows at a
    time, with at most ``steps`` linearise-and-project steps."""
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
    return Refined(best, best_sq, evaluations)


class _Margins:
    """The margins of each row's class ``l`` over its strongest rivals at ``u``, their gradients, and
    whether ``u`` counts as a success.

    The margins are ``z_l - z_j`` for the ``COMPETITORS`` largest other logits ``j``, in both modes:
    an untargeted row refines exactly like the targeted attack towards ``l`` and only records
    differently (any point no longer classified as ``y``; see :class:`~intriguing.attacks.lbfgs.Rows`).
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], criterion: Criterion):
        self.model, self.shape, self.criterion = model, shape, criterion

    def __call__(self, u: torch.Tensor, goal: torch.Tensor, true: torch.Tensor):
        with torch.enable_grad():
            point = u.detach().requires_grad_(True)
            logits = self.model(point.view(-1, *self.shape))
            rivals = self._rivals(logits.detach(), goal)  # (B, k)
            values = logits.gather(1, goal[:, None]) - logits.gather(1, rivals)  # (B, k)
            grads = [torch.autograd.grad(values[:, j].sum(), point, retain_graph=j + 1 < values.shape[1])[0]
                     for j in range(values.shape[1])]
        return values.detach(), torch.stack(grads, 1), self.criterion.safely_reached(logits.detach(), true)

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
        b = delta[going, None] - values + _times(grads, u[going])
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
    out = x.clone()
    rows = torch.arange(len(x), device=x.device)  # rows still iterating; finished rows leave the batch
    dual = _Dual(A, b.double() - _times(A, x), low - x, high - x)  # A p >= beta with p = u - x
    lam = torch.zeros(len(x), A.shape[1], device=x.device, dtype=x.dtype)
    state = dual.at(lam)
    for _ in range(iterations):
        violation = dual.beta - state.Ap  # dD/dlam
        residual = (lam - (lam + violation).clamp_min(0)).abs().amax(1)
        going = residual > tol * (1 + dual.beta.abs().amax(1))
        if 2 * int(going.sum()) <= len(rows):  # half the rows are done: write them out, drop them
            out[rows[~going]] = x[rows[~going]] + state.p[~going]
            rows, lam, violation, dual, state = rows[going], lam[going], violation[going], dual[going], state[going]
            going = going[going]
            if len(rows) == 0:
                return out.to(dtype)
        direction = torch.where(going[:, None], dual.newton_direction(lam, violation, state.v), 0.0)
        lam, state = _dual_line_search(lam, direction, state, dual)
    out[rows] = x[rows] + state.p
    return out.to(dtype)


def _times(A: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``A p`` per row: A (B, k, m), p (B, m) -> (B, k), the history streamed once."""
    return torch.bmm(p[:, None, :], A.transpose(1, 2))[:, 0]


@dataclass
class _DualPoint:
    """At multipliers ``lam``: ``v = A^T lam``, the displacement ``p = clip(v)``, ``A p`` and ``D(lam)``."""

    v: torch.Tensor
    p: torch.Tensor
    Ap: torch.Tensor
    value: torch.Tensor

    def __getitem__(self, keep: torch.Tensor) -> _DualPoint:
        return _DualPoint(self.v[keep], self.p[keep], self.Ap[keep], self.value[keep])


@dataclass
class _Dual:
    """The dual ``D(lam) = |p|^2 / 2 - lam . (A p - beta)`` of the projection, ``p = clip(A^T lam)``
    to ``[p_low, p_high]``, for a batch of rows (float64)."""

    A: torch.Tensor
    beta: torch.Tensor
    p_low: torch.Tensor
    p_high: torch.Tensor
    scale: torch.Tensor | None = None  # |A|^2 / k per row (B, 1, 1): the Hessian's scale

    def __post_init__(self) -> None:
        if self.scale is None:
            self.scale = self.A.pow(2).sum((1, 2))[:, None, None] / self.A.shape[1]

    def __getitem__(self, keep: torch.Tensor) -> _Dual:
        return _Dual(self.A[keep], self.beta[keep], self.p_low[keep], self.p_high[keep], self.scale[keep])

    def at(self, lam: torch.Tensor) -> _DualPoint:
        v = torch.bmm(lam[:, None, :], self.A)[:, 0]
        p = torch.minimum(torch.maximum(v, self.p_low), self.p_high)
        Ap = _times(self.A, p)
        return _DualPoint(v, p, Ap, 0.5 * p.pow(2).sum(1) - (lam * (Ap - self.beta)).sum(1))

    def newton_direction(self, lam: torch.Tensor, violation: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Projected Newton step: Hessian ``A_F A_F^T`` over the unclipped coordinates ``F``, on the
        constraints that are violated or carry a multiplier (identity-scaled elsewhere)."""
        k = self.A.shape[1]
        working = (lam > 0) | (violation > 0)
        free = ((v > self.p_low) & (v < self.p_high)).to(self.A.dtype)
        hessian = torch.bmm(self.A * free[:, None], self.A.transpose(1, 2))
        scale = self.scale
        eye = torch.eye(k, device=lam.device, dtype=lam.dtype)
        pair = working[:, :, None] & working[:, None, :]
        hessian = torch.where(pair, hessian, eye * scale) + 1e-10 * scale * eye
        return torch.linalg.solve(hessian, torch.where(working, violation, torch.zeros_like(violation)))


def _dual_line_search(lam: torch.Tensor, direction: torch.Tensor, current: _DualPoint, dual: _Dual,
                      halvings: int = 12) -> tuple[torch.Tensor, _DualPoint]:
    """Largest step ``t in {1, 1/2, ...}`` along ``direction`` (projected onto ``lam >= 0``) that does
    not lower D; a row where none does keeps ``lam``. The full step is tried on every row at once;
    the few rows that need halvings continue on their own, so they cost little."""
    floor = current.value - 1e-12 * current.value.abs().clamp_min(1)
    candidate = (lam + direction).clamp_min(0)
    at = dual.at(candidate)
    ok = at.value >= floor
    lam = torch.where(ok[:, None], candidate, lam)
    state = _DualPoint(*(torch.where(ok[:, None] if new.dim() == 2 else ok, new, old)
                         for new, old in zip((at.v, at.p, at.Ap, at.value), (current.v, current.p, current.Ap,
                                                                               current.value))))
    waiting = (~ok).nonzero().squeeze(1)
    base, sub, step = lam[waiting], dual[waiting], 0.5
    for _ in range(halvings - 1):
        if len(waiting) == 0:
            break
        candidate = (base + step * direction[waiting]).clamp_min(0)
        at = sub.at(candidate)
        ok = at.value >= floor[waiting]
        done = waiting[ok]
        lam[done] = candidate[ok]
        state.v[done], state.p[done], state.Ap[done], state.value[done] = at.v[ok], at.p[ok], at.Ap[ok], at.value[ok]
        waiting, base, sub, step = waiting[~ok], base[~ok], sub[~ok], step / 2
    return lam, state
