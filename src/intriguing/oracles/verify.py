"""Proving that no point of a ball is classified as the target: batched branch and bound with optimised linear bounds.

To prove that an incumbent ``x*`` of the exact problem (:mod:`~intriguing.oracles.mip`) is optimal
to a relative gap ``g`` it suffices to show that no input within ``rho = ||x* - x0|| sqrt(1 - g)`` of
``x0`` (inside the box) makes the target win. This is a verification problem, and the fastest
complete verifiers solve it by branch and bound on ReLU phases with bounds that cost one backward
pass each, thousands of subdomains at once (beta-CROWN: Wang et al. 2021, "Beta-CROWN: efficient
bound propagation with per-neuron split constraints"; alpha-CROWN: Xu et al. 2021). Here:

* a subdomain fixes some ReLUs' phases; its bound is a lower bound on ``sum_j lam_j (logit_j - logit_t)``
  over the ball, with class weights ``lam`` (a point of the simplex), lower-relaxation slopes
  ``alpha`` and split multipliers ``beta`` all optimised by gradient ascent (every value is sound);
  a positive bound means some class beats the target everywhere there: the subdomain is pruned;
* the minimum of a linear function over the ball and box is the exact Lagrangian dual of
  :meth:`~intriguing.oracles.propagation.Domain.minimise`;
* a subdomain with every ReLU decided is an exact convex QP, solved directly: it either is pruned
  or holds a closer point (a new incumbent, which shrinks the ball);
* children start from their parent's optimised parameters (as beta-CROWN does), so 20 steps
  tighten an already good bound rather than start over; this cut the subdomains of the hardest
  FC20-20-10(ReLU) problem of the benchmark five-fold. While the batch has room, up to
  :data:`MAX_SPLITS` neurons are split at once (BaBSR-style scores, Bunel et al. 2020).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from intriguing.chains import Chain
from intriguing.oracles.propagation import Bounds, Domain, relaxation

# Neurons split at once per subdomain while the batch has room: a small tree costs one batch per level,
# each dominated by fixed overhead, so splitting several neurons per level cuts the levels (and the cost).
MAX_SPLITS = 3


@dataclass
class Verdict:
    """``proven``: nothing closer than ``radius`` (the last ball tried) makes the target win; ``domains`` visited."""

    proven: bool
    radius: float
    domains: int


class _Params:
    """The optimised parameters of a batch of subdomains: class weights, slopes, split multipliers.

    ``start`` (B, P) holds each subdomain's starting values as a row of :meth:`vector` (its parent's
    optimised ones, as beta-CROWN reuses them: a child's bound starts near its parent's) or NaN
    for the defaults (uniform class weights, slopes 1/2, multipliers 0).
    """

    def __init__(self, start: torch.Tensor, classes: int, sizes: list[int]):
        parts = torch.split(start, [classes, *sizes, *sizes], dim=1)
        defaults = [0.0] + [0.5] * len(sizes) + [0.0] * len(sizes)
        tensors = [torch.where(torch.isnan(p), d, p).requires_grad_(True) for p, d in zip(parts, defaults)]
        self.lam, self.alpha, self.beta = tensors[0], tensors[1:1 + len(sizes)], tensors[1 + len(sizes):]

    @staticmethod
    def width(classes: int, sizes: list[int]) -> int:
        return classes + 2 * sum(sizes)

    def vector(self) -> torch.Tensor:
        """Every parameter of each subdomain as one row (B, P)."""
        return torch.cat([t.detach() for t in self.all()], dim=1)

    def all(self) -> list[torch.Tensor]:
        return [self.lam, *self.alpha, *self.beta]

    def clamp(self) -> None:
        with torch.no_grad():
            for a in self.alpha:
                a.clamp_(0.0, 1.0)
            for b in self.beta:
                b.clamp_(min=0.0)


def _ball_minimum(domain: Domain, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Lower bound on ``min a_i . x + c_i`` over box and ball, differentiable in ``a`` (envelope theorem)."""
    box = a.clamp(min=0) @ domain.low + a.clamp(max=0) @ domain.high + c
    if math.isinf(domain.radius):
        return box
    with torch.no_grad():  # the dual multiplier where the ball constraint is tight (any one is sound)
        mult = domain.multiplier(a)
        x = domain.inner(a.detach(), mult)
    dual = (a * x).sum(1) + mult.squeeze(1) * ((x - domain.x0).pow(2).sum(1) - domain.radius ** 2) + c
    return torch.maximum(box, dual)


def batch_bounds(chain: Chain, domain: Domain, bounds: Bounds, phases: list[torch.Tensor], target: int,
                 params: _Params) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Lower bounds (B,) on ``sum_j lam_j (logit_j - logit_t)`` per subdomain, and per layer the coefficients on ``h_k``.

    ``phases[k]`` (B, n_k): 1 active, -1 inactive, 0 open. Open neurons use the lower line
    ``alpha z`` where their coefficient is positive and the chord where negative (CROWN); a split
    neuron is linear and its constraint enters with ``beta`` (beta-CROWN).
    """
    others = [j for j in range(chain.num_classes) if j != target]
    weights = torch.softmax(params.lam, dim=1)  # (B, C - 1): a point of the simplex
    spec = torch.zeros(len(weights), chain.num_classes, dtype=torch.float64)
    spec = spec.index_put((torch.arange(len(weights))[:, None], torch.tensor(others)[None]), weights)
    spec = spec - spec.sum(1, keepdim=True) * torch.nn.functional.one_hot(
        torch.tensor(target), chain.num_classes).double()
    lam = spec @ chain.weights[-1]
    const = spec @ chain.biases[-1]
    coefficients = []
    for k in reversed(range(len(chain.activations))):
        coefficients.append(lam)
        lo, hi = node_bounds(bounds[k], phases[k])
        active, inactive = lo >= 0, hi <= 0
        open_ = ~active & ~inactive
        width = (hi - lo).clamp(min=1e-300)
        us = torch.where(active, 1.0, torch.where(open_, hi / width, 0.0))
        ui = torch.where(open_, -lo * hi / width, 0.0)
        ls = torch.where(active, 1.0, torch.where(open_, params.alpha[k], 0.0))
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        const = const + (neg * ui).sum(1)
        coeff = pos * ls + neg * us - phases[k].double() * params.beta[k]
        const = const + coeff @ chain.biases[k]
        lam = coeff @ chain.weights[k]
    return _ball_minimum(domain, lam, const), coefficients[::-1]


def node_bounds(layer: tuple[torch.Tensor, torch.Tensor], phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's bounds inside each subdomain (B, n): split neurons cut at 0."""
    lo, hi = layer
    lo = torch.where(phase > 0, lo.clamp(min=0), lo)
    hi = torch.where(phase < 0, hi.clamp(max=0), hi)
    return lo, hi


def domain_bounds(chain: Chain, domain: Domain, bounds: Bounds, phases: list[torch.Tensor]) -> Bounds:
    """Per-subdomain bounds (B, n_k) of every hidden layer: the splits cut at 0, later layers re-bounded by CROWN.

    A split neuron is linear inside its subdomain, so later layers' bounds tighten there, as in
    BaBSR (Bunel et al. 2020); only neurons still unstable in some subdomain are re-bounded.
    """
    out: Bounds = []
    batch = len(phases[0])
    for k in range(len(chain.activations)):
        lo, hi = (t.expand(batch, -1).clone() for t in node_bounds(bounds[k], phases[k]))
        cols = ((lo < 0) & (hi > 0)).any(0).nonzero().squeeze(1)
        if k > 0 and len(cols):
            spec = torch.zeros(len(cols), len(bounds[k][0]), dtype=torch.float64)
            spec[torch.arange(len(cols)), cols] = 1.0
            spec = torch.cat([spec, -spec])  # (2c, n_k): lower bounds of z and of -z
            lam = (spec @ chain.weights[k]).expand(batch, -1, -1)
            const = (spec @ chain.biases[k]).expand(batch, -1)
            for j in reversed(range(k)):
                ls, li, us, ui = relaxation(chain.activations[j], *out[j])  # each (B, n_j)
                pos, neg = lam.clamp(min=0), lam.clamp(max=0)
                const = const + (neg * ui[:, None]).sum(-1)
                lam = pos * ls[:, None] + neg * us[:, None]
                const = const + lam @ chain.biases[j]
                lam = lam @ chain.weights[j]
            # One dual multiplier per row, from the batch's mean coefficients: any multiplier is sound (weak
            # duality) and the subdomains' coefficients differ little, so the bounds stay near exact for one
            # sort per row instead of one per row and subdomain.
            mult = domain.multiplier(lam.mean(0)).expand(batch, -1, -1).reshape(-1, 1)
            values = domain.minimise(lam.reshape(-1, lam.shape[-1]), const.reshape(-1), mult).reshape(batch, -1)
            lo[:, cols] = torch.maximum(lo[:, cols], values[:, : len(cols)])
            hi[:, cols] = torch.minimum(hi[:, cols], -values[:, len(cols):])
            lo, hi = node_bounds((lo, hi), phases[k])
        out.append((lo, hi))
    return out


def optimise(chain: Chain, domain: Domain, bounds: Bounds, phases: list[torch.Tensor], target: int,
             start: torch.Tensor, steps: int = 20, lr: float = 0.5, deadline: float = math.inf,
             goal: float = math.inf) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The best bound per subdomain over ``steps`` Adam steps on ``(lam, alpha, beta)`` from ``start``
    (see :class:`_Params`), with the last coefficients and parameters.

    Stops as soon as every subdomain's bound exceeds ``goal`` (all pruned: more steps change nothing).
    """
    params = _Params(start, chain.num_classes - 1, [lo.shape[-1] for lo, _ in bounds])
    optimiser = torch.optim.Adam(params.all(), lr=lr)
    best = torch.full((len(phases[0]),), -math.inf, dtype=torch.float64)
    for step in range(steps):
        if step and time.perf_counter() > deadline:
            break  # every iterate's bound is sound: stop early, the caller reports the time limit
        value, coefficients = batch_bounds(chain, domain, bounds, phases, target, params)
        best = torch.maximum(best, value.detach())
        if bool((best > goal).all()):
            break
        optimiser.zero_grad()
        (-value.sum()).backward()
        optimiser.step()
        params.clamp()
    return best, [c.detach() for c in coefficients], params.vector()


def _branch_scores(bounds: Bounds, phases: list[torch.Tensor], coefficients: list[torch.Tensor]) -> torch.Tensor:
    """BaBSR-style score (Bunel et al. 2020) per open neuron (B, n_total): the chord intercept its coefficient pays."""
    scores = []
    for (lo0, hi0), phase, lam in zip(bounds, phases, coefficients):
        lo, hi = node_bounds((lo0, hi0), phase)
        open_ = (lo < 0) & (hi > 0)
        intercept = -lo * hi / (hi - lo).clamp(min=1e-300)
        score = lam.clamp(max=0).abs() * intercept + 1e-6 * lam.abs() * (hi - lo) + 1e-12
        scores.append(torch.where(open_, score, -1.0))
    return torch.cat(scores, dim=1)


def verify(chain: Chain, x0: torch.Tensor, bounds_at: Callable[[float], Bounds], target: int, radius: float,
           leaf: Callable[[list[np.ndarray]], float | None], deadline: float, *, box: tuple[torch.Tensor, torch.Tensor],
           margin: float = 0.0, batch: int = 128) -> Verdict:
    """Prove no point within ``radius`` of ``x0`` (in the box) makes ``target`` win, by batched branch and bound.

    ``bounds_at(radius)``: hidden-layer bounds valid on that ball. ``leaf(phases)`` solves a subdomain
    with every ReLU decided (phases per layer) exactly and returns the new, smaller radius to prove
    if it holds a closer incumbent, ``math.inf`` if it holds nothing inside the ball, None if
    undecided (then nothing is proven). Subdomains pruned on a larger ball stay pruned on a smaller one.
    """
    sizes = [w.shape[0] for w in chain.weights[:-1]]
    offsets = np.cumsum([0] + sizes)
    domain, bounds = Domain(x0, box[0], box[1], radius), bounds_at(radius)
    width = _Params.width(chain.num_classes - 1, sizes)
    root = (np.zeros(offsets[-1], dtype=np.int8), torch.full((width,), math.nan, dtype=torch.float64))
    todo, visited = [root], 0  # (phases, starting parameters) per subdomain
    while todo:
        if time.perf_counter() > deadline:
            return Verdict(False, radius, visited)
        chunk, todo = todo[-batch:], todo[:-batch]
        visited += len(chunk)
        flat = torch.from_numpy(np.stack([row for row, _ in chunk]).astype(np.int64))
        phases = [flat[:, offsets[k]:offsets[k + 1]] for k in range(len(sizes))]
        chunk, phases, local = _non_empty(chunk, phases, domain_bounds(chain, domain, bounds, phases))
        if not chunk:
            continue
        start = torch.stack([vec for _, vec in chunk])
        value, coefficients, params = optimise(chain, domain, local, phases, target, start, deadline=deadline,
                                               goal=1e-9 - margin)
        if time.perf_counter() > deadline:
            return Verdict(False, radius, visited)
        scores = _branch_scores(local, phases, coefficients)
        decided = [torch.where(lo >= 0, 1, torch.where(hi <= 0, -1, phase)).numpy()
                   for (lo, hi), phase in zip(local, phases)]
        open_ = np.flatnonzero((value <= 1e-9 - margin).numpy())  # the target may win here
        splits = int(np.clip(np.log2(batch / max(len(open_), 1)), 1, MAX_SPLITS))
        for i in open_:
            chosen = [int(j) for j in torch.argsort(scores[i], descending=True)[:splits] if scores[i, j] >= 0]
            if chosen:
                todo.extend((child, params[i]) for child in _children(chunk[i][0], chosen))
                continue
            smaller = leaf([d[i].astype(np.int8) for d in decided])  # every ReLU decided: an exact QP
            if smaller is None:
                return Verdict(False, radius, visited)
            if smaller < radius:
                radius = smaller
                domain, bounds = Domain(x0, box[0], box[1], radius), bounds_at(radius)
    return Verdict(True, radius, visited)


def _non_empty(chunk: list, phases: list[torch.Tensor], local: Bounds) -> tuple[list, list[torch.Tensor], Bounds]:
    """The subdomains whose bounds are consistent (an empty one holds no input), with their phases and bounds."""
    empty = torch.zeros(len(chunk), dtype=torch.bool)
    for lo, hi in local:
        empty |= (lo > hi).any(1)
    keep = (~empty).nonzero().squeeze(1)
    return [chunk[i] for i in keep.tolist()], [p[keep] for p in phases], [(lo[keep], hi[keep]) for lo, hi in local]


def _children(row: np.ndarray, neurons: list[int]) -> list[np.ndarray]:
    """The ``2**len(neurons)`` subdomains of ``row`` with each of ``neurons`` fixed active or inactive."""
    out = []
    for signs in itertools.product((1, -1), repeat=len(neurons)):
        child = row.copy()
        child[neurons] = signs
        out.append(child)
    return out
