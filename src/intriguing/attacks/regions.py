"""Beyond the paper, for ReLU networks: Eq. 1's minimum by a local search over linear regions.

A chain of ``Linear`` layers and ReLUs is piecewise affine. Inside one activation pattern (which
ReLUs are on) the logits are an affine function of the input, and the pattern's region is a
polyhedron, so there Eq. 1 (Szegedy et al. 2014, Sec. 4.1: the smallest ``r`` with ``x + r`` in the
box classified as ``l``) is a convex QP::

    minimise ||u - x||^2  s.t.  z_l(u) - z_j(u) >= delta (j != l),  s_i a_i(u) >= 0 (every ReLU i),  u in the box,

with ``a_i`` the affine pre-activations of the region and ``s_i = +1`` for the ReLUs that are on,
``-1`` for those that are off. Eq. 1's optimum is the optimum of some region's QP. The
linearise-and-project refinement (:mod:`~intriguing.attacks.refine`) ends where the perturbation
is normal to the boundary, which can be a local minimum: on FC20-20-10(ReLU), 3 of 20 examples
ended 8-11% above the exact minimum, in regions 2-4 ReLUs away from the optimum's.

This phase solves the QP of the refined point's region, then tries the neighbouring regions across
the ReLU hyperplanes that pass closest to the QP's solution (on them the solution also lies in the
neighbour, whose own QP may lead further) and moves to the best improvement, round after round,
batched over rows and candidate regions (:func:`search_regions`: the exact solver of
:mod:`~intriguing.oracles.branch` polishes its incumbent with it too, verifying in float64 through
its chain). On those 20 examples the refined attack then ends within 0.01% of the exact optimum
on 18, 0.5% and 4% above it on the other two; on 40 further examples on 38 within 5%, the other two
8% and 16% above it (in regions 7 and 6 ReLUs away from the optimum's: beyond a search by single
flips).
The regions' affine maps come from the weights (matrix products, no model call); each candidate
point is verified by a forward pass of the model, counted as one evaluation, and kept only if the
model classifies it as a success and it is closer than the best so far. It applies only to models
that :meth:`ReluChain.of` reads as a chain of ``Linear`` and ``ReLU`` layers (e.g. the zoo's ReLU
nets); for any other model it returns the starting points unchanged, at no cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from intriguing.attacks.criteria import SAFE_MARGIN, Criterion
from intriguing.attacks.projection import matvec, project_to_polyhedron
from intriguing.chains import Chain, chain_of
from intriguing.errors import IntriguingError

FLIPS = 6  # neighbouring regions tried per row and round: across the ReLU hyperplanes closest to the solution
KEEP = 64  # at most this many half-spaces per QP, the nearest to x (those farther than the best point cannot bind)
DELTA = 2 * SAFE_MARGIN  # logit margin the region QPs and the refinement's steps aim for
BUDGET = 2**27  # bytes of constraint rows built at once (float64)
ITERATIONS = 100  # dual Newton steps per QP: dozens of nearly parallel ReLU constraints need more than a few margins
Box = tuple[float | torch.Tensor, float | torch.Tensor]  # the inputs' bounds: scalars, or per pixel (m,)
Verify = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (points, rows) -> (sq, ok)


@dataclass(frozen=True)
class ReluChain(Chain):
    """A :class:`~intriguing.chains.Chain` of ``Linear`` layers and ReLUs, on the inputs' device (float64)."""

    @staticmethod
    def of(model: nn.Module, m: int, device: torch.device) -> ReluChain | None:
        """The chain computing ``model`` on ``m`` flat inputs, or None where ``model`` is not one: what
        :func:`~intriguing.chains.chain_of` reads with ReLUs only (the oracles' reader), taking ``m``
        inputs, with no dropout active (in training mode the model is not one function)."""
        if any(isinstance(module, nn.Dropout) and module.training for module in model.modules()):
            return None
        try:
            chain = chain_of(model, allowed=("relu",))
        except IntriguingError:
            return None
        if chain.input_size != m:
            return None
        return ReluChain(tuple(w.to(device) for w in chain.weights), tuple(b.to(device) for b in chain.biases),
                         chain.activations)

    @property
    def hidden(self) -> int:
        return sum(len(b) for b in self.biases[:-1])

    def pattern(self, u: torch.Tensor) -> torch.Tensor:
        """Which ReLUs are on at each row of ``u`` (R, m): (R, hidden) bool, layer after layer."""
        on = [z > 0 for z in self.pre_activations(u)[:-1]]
        return torch.cat(on, 1) if on else torch.zeros(len(u), 0, dtype=torch.bool, device=u.device)

    def region(self, pattern: torch.Tensor, goal: torch.Tensor,
               delta: float = DELTA) -> tuple[torch.Tensor, torch.Tensor]:
        """The region QP's half-spaces ``G u >= h`` for each row's ``pattern`` (R, hidden) and class ``goal``:
        the ReLUs' sign constraints, then the margins (at least ``delta``) of ``goal`` over every other class."""
        A, c = self.weights[0].expand(len(pattern), -1, -1), self.biases[0].expand(len(pattern), -1)
        G, h, start = [], [], 0
        for w, b in zip(self.weights[1:], self.biases[1:]):
            on = pattern[:, start:start + len(c[0])].double()
            start += len(c[0])
            sign = 2 * on - 1
            G.append(sign[:, :, None] * A)
            h.append(-sign * c)
            A, c = torch.matmul(w, on[:, :, None] * A), (on * c) @ w.T + b
        rows, k = torch.arange(len(goal), device=goal.device), c.shape[1] - 1
        others = torch.ones_like(c, dtype=torch.bool).scatter_(1, goal[:, None], False)
        G.append((A[rows, goal][:, None] - A)[others].view(len(goal), k, -1))
        h.append((delta - (c[rows, goal][:, None] - c))[others].view(len(goal), k))
        return torch.cat(G, 1), torch.cat(h, 1)

    def closest(self, x: torch.Tensor, patterns: torch.Tensor, goal: torch.Tensor, radius: torch.Tensor,
                bounds: Box, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's region QP solution (R, m), float64, for ``x`` (R, m) and its ``patterns``, without the
        half-spaces that cannot bind within ``radius`` (R,) of ``x`` (:func:`_nearest`), and its distance to
        every ReLU's hyperplane (R, hidden): a few rows at a time."""
        width = self.hidden + len(self.biases[-1]) - 1
        per = max(1, BUDGET // (8 * width * x.shape[1]))
        points, distances = [], []
        for part in torch.arange(len(x), device=x.device).split(per):
            x_part = x[part].double()
            G, h = self.region(patterns[part], goal[part], delta)
            u = project_to_polyhedron(x_part, *_nearest(G, h, x_part, radius[part]), *bounds, iterations=ITERATIONS)
            relu = G[:, :self.hidden]
            points.append(u)
            distances.append((matvec(relu, u) - h[:, :self.hidden]).abs() / relu.norm(dim=2))
        return torch.cat(points), torch.cat(distances)


def region_search(model: nn.Module, shape, x: torch.Tensor, start: torch.Tensor, start_sq: torch.Tensor,
                  goal: torch.Tensor, true: torch.Tensor, criterion: Criterion, bounds: tuple[float, float],
                  rounds: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From each row's adversarial ``start`` (finite, positive ``start_sq``): its region's QP, then up to
    ``rounds`` moves to the best neighbouring region. Returns per row the closest verified point, its
    squared distance and the evaluations spent (one forward pass per candidate region)."""
    todo = (torch.isfinite(start_sq) & (start_sq > 0)).nonzero().squeeze(1)
    chain = ReluChain.of(model, x.shape[1], x.device) if rounds and len(todo) else None
    if chain is None:
        return start.clone(), start_sq.clone(), torch.zeros(len(x), dtype=torch.int64, device=x.device)
    check = _ModelCheck(model, tuple(shape), criterion, x, true)
    return search_regions(chain, x, start, start_sq, goal, bounds, rounds, check, rows=todo)


def search_regions(chain: ReluChain, x: torch.Tensor, start: torch.Tensor, start_sq: torch.Tensor,
                   goal: torch.Tensor, bounds: Box, rounds: int, verify: Verify, *, rows: torch.Tensor | None = None,
                   delta: float = DELTA, deadline: float = math.inf) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The search of :func:`region_search` on ``chain``, for the ``rows`` of ``x`` (default: all) and the
    squared distances ``start_sq`` of their ``start`` points (inf: none adversarial yet).

    ``verify(points, rows)`` returns each candidate's squared distance (in ``start_sq``'s dtype) and
    whether it counts as adversarial: only such points are kept, so the result is as trustworthy as
    ``verify``, whatever the QPs' accuracy. ``delta``: the logit margin the QPs aim for. No round
    starts after ``deadline`` (``time.perf_counter()``).
    """
    best, best_sq = start.clone(), start_sq.clone()
    evaluations = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    rows = torch.arange(len(x), device=x.device) if rows is None else rows
    patterns = chain.pattern(start[rows])
    for step in range(rounds + 1):
        points, distances = chain.closest(x[rows], patterns, goal[rows], best_sq[rows].sqrt(), bounds, delta)
        sq, ok = verify(points, rows)
        evaluations.index_add_(0, rows, torch.ones_like(rows))
        winner = _best_per_row(rows, torch.where(ok, sq, torch.inf), best_sq)
        best[rows[winner]], best_sq[rows[winner]] = points[winner].to(best.dtype), sq[winner]
        # Round 0 continues from the start's region even without a gain: its neighbours may hold one.
        going = winner if step else torch.arange(len(rows), device=x.device)
        rows, patterns = _neighbours(rows[going], patterns[going], distances[going])
        if len(rows) == 0 or time.perf_counter() > deadline:
            break
    return best, best_sq, evaluations


@dataclass(frozen=True)
class _ModelCheck:
    """The attack's verification of region QP solutions: a forward pass of the model, as in every search."""

    model: nn.Module
    shape: tuple[int, ...]
    criterion: Criterion
    x: torch.Tensor
    true: torch.Tensor

    def __call__(self, points: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distances and whether the model counts each point as a success."""
        u = points.to(self.x.dtype)
        with torch.no_grad():
            logits = self.model(u.view(-1, *self.shape))
        ok = torch.isfinite(logits).all(1) & self.criterion.safely_reached(logits, self.true[rows])
        return (u - self.x[rows]).pow(2).sum(1), ok


def _nearest(G: torch.Tensor, h: torch.Tensor, x: torch.Tensor, radius: torch.Tensor):
    """The at most ``KEEP`` half-spaces per row that can bind within ``radius`` of ``x``, nearest (most
    violated) first (an unused slot holds the void constraint ``0 >= -1``).

    A half-space that every point within ``radius`` of ``x`` satisfies cannot bind at a solution closer
    than ``radius``, so leaving it out changes no improving solution. A zero normal with a positive
    bound makes the region empty: such a row keeps no constraint, its solution ``x`` fails verification.
    """
    norm = G.norm(dim=2)
    slack = torch.bmm(G, x[:, :, None])[:, :, 0] - h  # >= 0: satisfied at x
    flat = norm <= 1e-12 * norm.amax(1, keepdim=True).clamp_min(1e-300)
    empty = (flat & (h > 0)).any(1, keepdim=True)
    distance = -slack / norm.clamp_min(1e-300)
    near = ~flat & ~empty & (distance >= -radius[:, None] * (1 + 1e-6))
    keep = max(1, min(KEEP, int(near.sum(1).max())))
    order = torch.where(near, distance, -torch.inf).topk(keep, dim=1).indices
    chosen = near.gather(1, order)
    G = torch.where(chosen[:, :, None], G.gather(1, order[:, :, None].expand(-1, -1, G.shape[2])), 0.0)
    h = torch.where(chosen, h.gather(1, order), -1.0)
    return G, h


def _best_per_row(rows: torch.Tensor, sq: torch.Tensor, best_sq: torch.Tensor) -> torch.Tensor:
    """Indices of the candidates that are their row's closest and closer than the row's best."""
    lowest = torch.full_like(best_sq, torch.inf).scatter_reduce(0, rows, sq, "amin")
    candidate = torch.arange(len(rows), device=rows.device)
    first = torch.full_like(best_sq, len(rows), dtype=torch.int64).scatter_reduce(
        0, rows, torch.where(sq == lowest[rows], candidate, len(rows)), "amin")
    winner = first[rows] == candidate
    return (winner & (sq < best_sq[rows] * (1 - 1e-9))).nonzero().squeeze(1)


def _neighbours(rows: torch.Tensor, patterns: torch.Tensor, distances: torch.Tensor):
    """Each row's pattern with one ReLU flipped, for the ``FLIPS`` ReLUs whose hyperplanes pass closest to
    the row's QP solution (on them, the solution also lies in the neighbouring region)."""
    if patterns.shape[1] == 0:
        return rows[:0], patterns[:0]
    closest, neuron = distances.nan_to_num(torch.inf).topk(min(FLIPS, patterns.shape[1]), dim=1, largest=False)
    row_of, slot = torch.isfinite(closest).nonzero(as_tuple=True)
    flipped = patterns[row_of].clone()
    flipped[torch.arange(len(row_of), device=rows.device), neuron[row_of, slot]] ^= True
    return rows[row_of], flipped
