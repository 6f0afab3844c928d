"""Closest points of the box to ``x`` under linear constraints: the projections the refinement steps solve.

Both phases beyond the paper's attack (Section 4.1, Eq. 1: the smallest ``r`` with ``x + r`` in the
box classified as ``l``) reduce each step to the same convex problem, per row::

    minimise ||u - x||^2  s.t.  A u >= b,  low <= u <= high,

with ``A`` the linearised class margins (:mod:`~intriguing.attacks.refine`) or, for a ReLU network,
the margins and ReLU sign constraints of one linear region (:mod:`~intriguing.attacks.regions`).
One half-space has an exact closed form; several are solved through the dual, batched over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DAMPING = 1e-10  # the dual Newton step's usual diagonal shift (relative to the Hessian's scale)
GROWTH = 1e4  # the damping of a row whose step found no ascent grows by this factor


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
    """Per row, the point of the box closest to ``x`` with ``A u >= b`` (k half-spaces; A (B, k, m), b (B, k)):
    :func:`solve_polyhedron` from ``lam = 0``, without its multipliers."""
    return solve_polyhedron(x, A, b, low, high, tol=tol, iterations=iterations)[0]


def solve_polyhedron(x: torch.Tensor, A: torch.Tensor, b: torch.Tensor, low: float, high: float,
                     start: torch.Tensor | None = None, tol: float = 1e-7,
                     iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the point of the box closest to ``x`` with ``A u >= b`` (A (B, k, m), b (B, k)) and its
    multipliers (B, k, float64), from the multipliers ``start`` (default 0).

    Solved through the dual, ``max_{lam >= 0} D(lam)`` with ``u(lam) = clip(x + A^T lam)``: a concave,
    piecewise-quadratic function of only ``k`` variables per row. Projected Newton steps (the
    Hessian is ``A_F A_F^T`` over the unclipped coordinates ``F``, restricted to the constraints that
    are violated or carry a multiplier) with a backtracking line search find the active pieces in a
    few iterations. Works in float64 on the displacement ``p = u - x`` so that the constraint values
    keep their precision; rows stop when their KKT residual is below ``tol`` (constraint units).
    Where the half-spaces cannot be reached inside the box, ``u`` ends at the closest box point found.
    A caller solving a sequence of nearby problems (:mod:`~intriguing.attacks.refine`) passes the last
    multipliers as ``start``: the active pieces barely change, and the Newton steps start next to them.

    Every pass over ``A`` costs about as much as a model evaluation on MNIST, so passes are spared: the
    Hessian (it only steers the step; every tested value is float64) uses ``A`` as given (float32 from
    the refinement, half the bytes; float64 from the region search, whose near-parallel constraints need
    it) and one reused buffer, and finished rows leave the batch as soon as an eighth of it is done.
    """
    dtype = x.dtype
    x = x.double()
    out, multipliers = x.clone(), x.new_zeros(A.shape[:2])
    rows = torch.arange(len(x), device=x.device)  # rows still iterating; finished rows leave the batch
    dual = _Dual.of(A, b, x, low, high)
    lam = multipliers.clone() if start is None else start.double().clamp_min(0)
    state = dual.start() if start is None else dual.at(lam)
    damping = torch.full((len(x),), DAMPING, device=x.device, dtype=x.dtype)
    work = torch.empty_like(A)  # the Hessian's A_F, rows [:len(rows)]
    for _ in range(iterations):
        violation = dual.beta - state.Ap  # dD/dlam
        residual = (lam - (lam + violation).clamp_min(0)).abs().amax(1)
        going = residual > tol * (1 + dual.beta.abs().amax(1))
        if 8 * int(going.sum()) <= 7 * len(rows):  # an eighth of the rows are done: write them out, drop them
            done = rows[~going]
            out[done], multipliers[done] = x[done] + state.p[~going], lam[~going]
            rows, lam, violation, dual, state = rows[going], lam[going], violation[going], dual[going], state[going]
            damping, going = damping[going], going[going]
            if len(rows) == 0:
                return out.to(dtype), multipliers
        direction = torch.where(going[:, None], dual.newton_direction(lam, violation, state.v, damping, work), 0.0)
        lam, state, moved = _dual_line_search(lam, direction, state, dual)
        # A row whose step found no ascent (a near-singular Hessian, many degenerate constraints) retries with a
        # damped one, which tends to a gradient step; a row that moved goes back towards the Newton step (a hundredfold
        # less damping per step).
        damping = torch.where(moved | ~going, (damping / 100).clamp_min(DAMPING), damping * GROWTH)
    out[rows], multipliers[rows] = x[rows] + state.p, lam
    return out.to(dtype), multipliers


def matvec(A: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
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

    def update(self, rows: torch.Tensor, other: _DualPoint, pick: torch.Tensor) -> None:
        """Rows ``rows`` of this point become rows ``pick`` of ``other``, in place."""
        self.v[rows], self.p[rows], self.Ap[rows] = other.v[pick], other.p[pick], other.Ap[pick]
        self.value[rows] = other.value[pick]


@dataclass
class _Dual:
    """The dual ``D(lam) = |p|^2 / 2 - lam . (A p - beta)`` of the projection, ``p = clip(A^T lam)``
    to ``[p_low, p_high]``, for a batch of rows (float64)."""

    A: torch.Tensor
    beta: torch.Tensor
    p_low: torch.Tensor
    p_high: torch.Tensor
    scale: torch.Tensor  # |A|^2 / k per row (B, 1, 1): the Hessian's scale
    given: torch.Tensor | None  # A as the caller gave it (float32 from the refinement): the Hessian's, half the bytes

    @staticmethod
    def of(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, low: float, high: float) -> _Dual:
        """The dual of projecting ``x`` (float64) onto ``A u >= b`` in the box: ``A p >= beta`` with ``p = u - x``."""
        A64, scale = A.double(), A.pow(2).sum((1, 2)).double()[:, None, None] / A.shape[1]
        return _Dual(A64, b.double() - matvec(A64, x), low - x, high - x, scale, A)

    def __getitem__(self, keep: torch.Tensor) -> _Dual:
        sub = self.evaluator(keep)
        sub.given = sub.A if self.given is self.A else None if self.given is None else self.given[keep]
        return sub

    def evaluator(self, keep: torch.Tensor) -> _Dual:
        """The rows ``keep``, for :meth:`at` only (no copy of ``given``)."""
        return _Dual(self.A[keep], self.beta[keep], self.p_low[keep], self.p_high[keep], self.scale[keep], None)

    def start(self) -> _DualPoint:
        """The point at ``lam = 0``, without passes over ``A`` (``p`` is 0 where ``x`` is in the box)."""
        p = torch.clamp(torch.zeros_like(self.p_low), self.p_low, self.p_high)
        Ap = matvec(self.A, p) if bool(p.any()) else torch.zeros_like(self.beta)
        return _DualPoint(torch.zeros_like(p), p, Ap, 0.5 * p.pow(2).sum(1))

    def at(self, lam: torch.Tensor) -> _DualPoint:
        v = torch.bmm(lam[:, None, :], self.A)[:, 0]
        p = torch.clamp(v, self.p_low, self.p_high)
        Ap = matvec(self.A, p)
        return _DualPoint(v, p, Ap, 0.5 * p.pow(2).sum(1) - (lam * (Ap - self.beta)).sum(1))

    def newton_direction(self, lam: torch.Tensor, violation: torch.Tensor, v: torch.Tensor,
                         damping: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
        """Projected Newton step: Hessian ``A_F A_F^T`` over the unclipped coordinates ``F``, on the
        constraints that are violated or carry a multiplier (identity-scaled elsewhere), plus
        ``damping`` (B,) times the scale on the diagonal. Built from ``A`` as given (float32 from the
        refinement): it only steers the step. ``work`` (at least A's rows, A's dtype) holds ``A_F``: a
        fresh tensor of A's size would cost page faults as dear as the product itself."""
        k = self.A.shape[1]
        working = (lam > 0) | (violation > 0)
        free = ((v > self.p_low) & (v < self.p_high)).to(self.given.dtype)
        masked = torch.mul(self.given, free[:, None], out=work[: len(self.given)])
        hessian = torch.bmm(masked, self.given.transpose(1, 2)).double()
        scale = self.scale
        eye = torch.eye(k, device=lam.device, dtype=lam.dtype)
        pair = working[:, :, None] & working[:, None, :]
        hessian = torch.where(pair, hessian, eye * scale) + damping[:, None, None] * scale * eye
        return torch.linalg.solve(hessian, torch.where(working, violation, torch.zeros_like(violation)))


def _dual_line_search(lam: torch.Tensor, direction: torch.Tensor, current: _DualPoint, dual: _Dual,
                      halvings: int = 12) -> tuple[torch.Tensor, _DualPoint, torch.Tensor]:
    """Largest step ``t in {1, 1/2, ...}`` along ``direction`` (projected onto ``lam >= 0``) that does
    not lower D; a row where none does keeps ``lam`` (the third result says which rows moved). The
    full step is tried on every row at once; the few rows that need halvings continue on their own,
    so they cost little. Those rows' share of ``A`` is copied once, and again only when half of them
    have found their step: a copy costs a pass over ``A`` like the step's evaluation."""
    floor = current.value - 1e-12 * current.value.abs().clamp_min(1)
    candidate = (lam + direction).clamp_min(0)
    at = dual.at(candidate)
    ok = at.value >= floor
    lam = torch.where(ok[:, None], candidate, lam)
    members = (~ok).nonzero().squeeze(1)  # rows of ``sub``; those still ``waiting`` have found no step yet
    state = at  # where the full step fails (few rows), back to the current point
    state.update(members, current, members)
    moved = ok.clone()
    waiting = torch.ones_like(members, dtype=torch.bool)
    base, sub, step = lam[members], dual.evaluator(members), 0.5
    for _ in range(halvings - 1):
        if not bool(waiting.any()):
            break
        if 2 * int(waiting.sum()) <= len(members):
            members, base, sub, waiting = members[waiting], base[waiting], sub[waiting], waiting[waiting]
        candidate = (base + step * direction[members]).clamp_min(0)
        at = sub.at(candidate)
        ok = waiting & (at.value >= floor[members])
        done = members[ok]
        moved[done] = True
        lam[done] = candidate[ok]
        state.update(done, at, ok)
        waiting, step = waiting & ~ok, step / 2
    return lam, state, moved
