"""Branch and bound over ReLU phases with exact convex-QP node bounds: the fast solver of the exact MIP.

The big-M program of :mod:`~intriguing.oracles.mip` (Tjeng et al. 2019) has a quadratic objective
over all ``m`` pixels. A solver that bounds nodes with linear programs (SCIP) must approximate
``||r||^2`` by cutting planes, hundreds of LP rounds per node for ``m = 784``. Relaxing the binaries
of the big-M encoding to ``[0, 1]`` gives exactly the triangle relaxation of each undecided ReLU,
so every node's relaxation is a convex QP, solved here to optimality by an interior-point method
(clarabel). Branching fixes one ReLU's phase (active: ``a = z >= 0``; inactive: ``a = 0 >= z``), the
node with the smallest bound is expanded first, and the tree stops when the incumbent is within the
relative ``gap`` of the smallest open bound: the same MIP, solved with exact node bounds.

Before its QP, every node is re-bounded by CROWN with its splits over the ball of the incumbent's
radius (as BaBSR and beta-CROWN do, Bunel et al. 2020, Wang et al. 2021): later layers' triangles
tighten and nodes where another class provably wins are pruned without a QP. The incumbent starts
at the attack's point and is polished by the attack's search over linear regions (:func:`_polish`).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

import clarabel
import numpy as np
import scipy.sparse as sp
import torch

from intriguing.attacks.regions import ReluChain, search_regions
from intriguing.chains import Chain
from intriguing.oracles.propagation import Bounds, Domain, layer_bounds, margin_lower_bounds, split_bounds
from intriguing.oracles.verify import Verdict, verify

_SOLVED = {clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved}
ACTIVE, INACTIVE, OPEN = 1, -1, 0
POLISH_ROUNDS = 4  # moves to a neighbouring region in the incumbent's polish
POLISH_MARGIN = 1e-6  # logits: the polish's QPs aim this far above the checked margin, beyond their tolerance


@dataclass
class Outcome:
    """What the tree proved: the incumbent point (or None), its squared distance, the lower bound, the count of nodes."""

    status: str
    point: np.ndarray | None
    upper_sq: float
    lower_sq: float
    nodes: int
    seconds: float
    hidden: list[tuple[np.ndarray, np.ndarray]]


class _Layout:
    """Column indices of the QP's variables: pixels ``x``, then per hidden layer ``z_k`` and ``h_k``."""

    def __init__(self, chain: Chain):
        self.m = chain.input_size
        self.z, self.h, start = [], [], self.m
        for w in chain.weights[:-1]:
            n = w.shape[0]
            self.z.append(np.arange(start, start + n))
            self.h.append(np.arange(start + n, start + 2 * n))
            start += 2 * n
        self.size = start


class _Relaxation:
    """Builds and solves the node QP; the rows shared by every node are assembled once."""

    def __init__(self, chain: Chain, domain: Domain, hidden: Bounds, target: int, margin: float):
        self.chain, self.hidden = chain, [(lo.numpy().copy(), hi.numpy().copy()) for lo, hi in hidden]
        self.target, self.margin_slack = target, -margin + 1e-9  # prune when max_j (logit_j - logit_t) > -margin
        self.lay = lay = _Layout(chain)
        self.x0 = domain.x0.numpy()
        # z_k - W_k h_{k-1} = b_k; none for a model without hidden layers (softmax regression)
        eq_rows, eq_rhs = [sp.csr_matrix((0, lay.size))], [np.zeros(0)]
        previous = np.arange(lay.m)
        for k, (w, b) in enumerate(zip(chain.weights[:-1], chain.biases[:-1])):
            block = sp.lil_matrix((w.shape[0], lay.size))
            block[:, previous] = -w.numpy()
            block[:, lay.z[k]] = sp.identity(w.shape[0])
            eq_rows.append(block.tocsr())
            eq_rhs.append(b.numpy())
            previous = lay.h[k]
        self.equalities = (sp.vstack(eq_rows).tocsr(), np.concatenate(eq_rhs))
        self.domain = domain
        w, b = chain.weights[-1].numpy(), chain.biases[-1].numpy()
        others = [j for j in range(chain.num_classes) if j != target]
        out = sp.lil_matrix((len(others), lay.size))  # -(W_t - W_j) h <= (b_t - b_j) - margin
        out[:, previous] = -(w[target] - w[others])
        self.classes = (out.tocsr(), b[target] - b[others] - margin)
        self.P = sp.diags(np.r_[np.full(lay.m, 2.0), np.zeros(lay.size - lay.m)]).tocsc()
        self.q = np.r_[-2.0 * self.x0, np.zeros(lay.size - lay.m)]

    def phases(self, k: int, fixed: np.ndarray, hidden=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Effective phases of layer ``k``: stable neurons from the bounds (the node's, else the root's), the others as branched."""
        lo, hi = (hidden or self.hidden)[k]
        return np.where(lo >= 0, ACTIVE, np.where(hi <= 0, INACTIVE, fixed)), lo, hi

    def _box(self, hidden) -> tuple[np.ndarray, np.ndarray]:
        """Variable bounds: the domain's box for ``x``, the layer bounds for ``z_k``, ``[0, max(u, 0)]`` for ``h_k``."""
        lows = np.concatenate([self.domain.low.numpy()] + [np.r_[lo, np.zeros_like(lo)] for lo, _ in hidden])
        highs = np.concatenate([self.domain.high.numpy()] + [np.r_[hi, np.maximum(hi, 0)] for _, hi in hidden])
        return lows, highs

    def _constraints(self, fixed: list[np.ndarray], hidden=None) -> tuple[sp.csc_matrix, np.ndarray, int]:
        """``(A, b, n_eq)`` for clarabel's ``A v + s = b``: the first ``n_eq`` rows equalities, the rest ``<=``."""
        eq, eq_rhs = [self.equalities[0]], [self.equalities[1]]
        ineq, ineq_rhs = [self.classes[0]], [self.classes[1]]
        hidden = hidden or self.hidden
        lows, highs = self._box(hidden)
        for k, phase_k in enumerate(fixed):
            phase, lo, hi = self.phases(k, phase_k, hidden)
            z, h = self.lay.z[k], self.lay.h[k]
            on, off, open_ = phase == ACTIVE, phase == INACTIVE, phase == OPEN
            highs[h[off]] = 0.0  # inactive: h = 0 and z <= 0
            highs[z[off]] = np.minimum(highs[z[off]], 0.0)
            lows[z[on]] = np.maximum(lows[z[on]], 0.0)  # active: h = z >= 0
            eq.append(_pairs(self.lay.size, h[on], z[on], 1.0, -1.0))
            eq_rhs.append(np.zeros(on.sum()))
            slope = hi[open_] / (hi[open_] - lo[open_])  # open: z <= h, h <= slope (z - lo)
            ineq.append(_pairs(self.lay.size, z[open_], h[open_], 1.0, -1.0))
            ineq_rhs.append(np.zeros(open_.sum()))
            ineq.append(_pairs(self.lay.size, h[open_], z[open_], 1.0, -slope))
            ineq_rhs.append(-slope * lo[open_])
        n = self.lay.size
        A = sp.vstack(eq + ineq + [sp.identity(n), -sp.identity(n)]).tocsc()
        return A, np.concatenate(eq_rhs + ineq_rhs + [highs, -lows]), sum(e.shape[0] for e in eq)

    def solve(self, fixed: list[np.ndarray], hidden=None) -> tuple[float, np.ndarray] | None:
        """The node QP's optimum ``(||x - x0||^2, variables)``, or None if the node is infeasible."""
        A, b, n_eq = self._constraints(fixed, hidden)
        cones = [clarabel.ZeroConeT(n_eq), clarabel.NonnegativeConeT(A.shape[0] - n_eq)]
        solution = _clarabel(self.P, self.q, A, b, cones)
        if solution is None:
            return None
        value = min(solution.obj_val, solution.obj_val_dual) + float(self.x0 @ self.x0)
        return max(value, 0.0), np.asarray(solution.x)

    def node_bounds(self, fixed: list[np.ndarray], radius: float) -> list | None:
        """CROWN bounds inside a node (:func:`~intriguing.oracles.propagation.split_bounds`) over the ball of ``radius``, or None.

        None also when bound propagation proves some class beats the target everywhere in the node.
        """
        domain = Domain(self.domain.x0, self.domain.low, self.domain.high, min(self.domain.radius, radius * (1 + 1e-9)))
        base = [(torch.from_numpy(lo), torch.from_numpy(hi)) for lo, hi in self.hidden]
        bounds = split_bounds(self.chain, domain, base, [torch.from_numpy(f.astype(np.int64)) for f in fixed])
        if bounds is None or (margin_lower_bounds(self.chain, self.target, bounds, domain) > self.margin_slack).any():
            return None
        return [(lo.numpy(), hi.numpy()) for lo, hi in bounds]

    def tighten(self, radius: float, deadline: float = math.inf) -> None:
        """Optimisation-based bound tightening (Tjeng et al. 2019, Sec. 4.2) of layers ``k >= 1``.

        Each unstable neuron's ``z`` is minimised and maximised over the relaxation, the class
        constraints and the ball ``||x - x0|| <= radius`` (an SOCP): valid on the MIP's feasible set
        inside the ball, and often much tighter than CROWN, so fewer neurons need branching.
        """
        n, m = self.lay.size, self.lay.m
        zero = sp.csc_matrix((n, n))
        ball = sp.hstack([-sp.identity(m), sp.csc_matrix((m, n - m))])  # s = (radius, x - x0) in the SOC
        for k in range(1, len(self.hidden)):
            A, b, n_eq = self._constraints([np.zeros(len(lo), dtype=np.int8) for lo, _ in self.hidden])
            A = sp.vstack([A, sp.csc_matrix((1, n)), ball]).tocsc()
            b = np.r_[b, radius, -self.x0]
            cones = [clarabel.ZeroConeT(n_eq), clarabel.NonnegativeConeT(A.shape[0] - n_eq - m - 1),
                     clarabel.SecondOrderConeT(m + 1)]
            lo, hi = self.hidden[k]
            for j in np.flatnonzero((lo < 0) & (hi > 0)):
                if time.perf_counter() > deadline:
                    return
                for sign in (1.0, -1.0):
                    q = np.zeros(n)
                    q[self.lay.z[k][j]] = sign
                    solution = _clarabel(zero, q, A, b, cones)
                    if solution is None:
                        continue
                    value = min(solution.obj_val, solution.obj_val_dual) - 1e-7 * (1 + abs(solution.obj_val))
                    if sign > 0:
                        lo[j] = max(lo[j], value)
                    else:
                        hi[j] = min(hi[j], -value)

    def violations(self, v: np.ndarray, fixed: list[np.ndarray], hidden=None) -> list[np.ndarray]:
        """Per layer, how far each open neuron's relaxed ``h`` lies above ``relu(z)`` (0 where decided)."""
        out = []
        for k, phase_k in enumerate(fixed):
            phase, _, _ = self.phases(k, phase_k, hidden)
            gap = v[self.lay.h[k]] - np.maximum(v[self.lay.z[k]], 0.0)
            out.append(np.where(phase == OPEN, gap, 0.0))
        return out


def _clarabel(P, q, A, b, cones):
    """Solve with clarabel, quietly; None unless solved."""
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    solution = clarabel.DefaultSolver(P, q, A, b, cones, settings).solve()
    return solution if solution.status in _SOLVED else None


def _pairs(n: int, first: np.ndarray, second: np.ndarray, a: float, b) -> sp.csr_matrix:
    """Rows ``a x[first_i] + b_i x[second_i]``, one per pair."""
    rows = np.arange(len(first))
    values = np.r_[np.full(len(first), a), np.broadcast_to(b, len(first))]
    return sp.csr_matrix((values, (np.r_[rows, rows], np.r_[first, second])), shape=(len(first), n))


def branch_and_bound(chain: Chain, domain: Domain, hidden: Bounds, target: int, *, margin: float = 0.0,
                     start: torch.Tensor | None = None, time_limit: float = 60.0, gap: float = 1e-4,
                     tolerance: float = 1e-7, tighten: float = 0.0, verify_share: float = 0.9) -> Outcome:
    """Best-first branch and bound on ReLU phases; see the module docstring.

    ``start`` (m,) is a known adversarial point (the attack's): the first incumbent, improved by a
    local search over neighbouring linear regions (:func:`_polish`). ``tighten`` is the fraction of
    ``time_limit`` the root's optimisation-based bound tightening may use (0: none). Every node is
    re-bounded by CROWN with its splits over the ball of the incumbent's radius (pruned at once if
    another class provably wins there), then bounded exactly by its QP. A node whose relaxed solution
    satisfies every ReLU (within ``tolerance``) is solved exactly and not split.
    """
    began = time.perf_counter()
    relax = _Relaxation(chain, domain, hidden, target, margin)
    incumbent = _Incumbent(chain, relax, target, margin - tolerance)
    if start is not None:
        incumbent.offer(start.numpy())
        _polish(incumbent, start, began + 0.1 * time_limit)
    if tighten and domain.radius < math.inf:
        relax.tighten(min(domain.radius, math.sqrt(incumbent.sq)), deadline=began + tighten * time_limit)
    if verify_share and incumbent.point is not None and relax.hidden:  # no ReLU (softmax regression): one QP below
        proof = _prove(chain, relax, incumbent, target, gap, margin, began + verify_share * time_limit)
        if proof.proven:
            return Outcome("optimal", incumbent.point, incumbent.sq, proof.radius ** 2, proof.domains,
                           time.perf_counter() - began, relax.hidden)
    root = [np.zeros(w.shape[0], dtype=np.int8) for w in chain.weights[:-1]]
    heap, counter, nodes, closed = [(0.0, 0, root)], 1, 0, False
    while heap and time.perf_counter() - began <= time_limit:
        closed = heap[0][0] >= incumbent.sq * (1 - gap)
        if closed:
            break
        _, _, fixed = heapq.heappop(heap)
        nodes += 1
        bounds = relax.node_bounds(fixed, math.sqrt(incumbent.sq))
        solved = None if bounds is None else relax.solve(fixed, bounds)
        if solved is None or solved[0] >= incumbent.sq * (1 - gap):
            continue
        value, v = solved
        incumbent.offer(v[: relax.lay.m])
        choice = _branching_neuron(relax.violations(v, fixed, bounds), tolerance)
        if choice is None:
            continue  # the relaxation is exact here: its optimum is this node's optimum
        for phase in (ACTIVE, INACTIVE):
            child = [f.copy() for f in fixed]
            child[choice[0]][choice[1]] = phase
            heapq.heappush(heap, (value, counter, child))
            counter += 1
    best_sq = incumbent.sq
    lower = min(heap[0][0], best_sq) if heap else best_sq
    status = "optimal" if closed or not heap else "timelimit"
    if incumbent.point is None and status == "optimal":
        status, lower = "infeasible", math.inf
    return Outcome(status, incumbent.point, best_sq, lower, nodes, time.perf_counter() - began, relax.hidden)


def _prove(chain: Chain, relax: _Relaxation, incumbent: _Incumbent, target: int, gap: float, margin: float,
           deadline: float) -> Verdict:
    """Prove the incumbent optimal to ``gap``: nothing within ``sqrt(1 - gap / 2)`` of its radius makes the target win.

    Batched branch and bound with optimised bounds (:func:`~intriguing.oracles.verify.verify`), far
    cheaper per subdomain than a QP; a leaf with every ReLU decided is the exact region QP.
    """
    x0, low, high = relax.domain.x0, relax.domain.low, relax.domain.high
    root = [(torch.from_numpy(lo), torch.from_numpy(hi)) for lo, hi in relax.hidden]
    shrink = 1 - gap / 2

    def bounds_at(radius: float) -> Bounds:
        crown = layer_bounds(chain, Domain(x0, low, high, radius))
        return [(torch.maximum(a, c), torch.maximum(torch.minimum(b, d), torch.maximum(a, c)))
                for (a, b), (c, d) in zip(crown, root)]

    def leaf(fixed: list[np.ndarray]) -> float | None:
        solved = relax.solve(fixed)
        if solved is None or solved[0] >= incumbent.sq * shrink:
            return math.inf
        return math.sqrt(incumbent.sq * shrink) if incumbent.offer(solved[1][: relax.lay.m]) else None

    return verify(chain, x0, bounds_at, target, math.sqrt(incumbent.sq * shrink), leaf, deadline, box=(low, high),
                  margin=margin)


class _Incumbent:
    """The best adversarial point known: the closest offered point that passes :meth:`check`."""

    def __init__(self, chain: Chain, relax: _Relaxation, target: int, margin: float):
        self.chain, self.relax, self.target, self.margin = chain, relax, target, margin
        self.low, self.high = relax.domain.low.numpy(), relax.domain.high.numpy()
        self.sq, self.point = math.inf, None

    def offer(self, x: np.ndarray) -> bool:
        """Keep ``x`` (clipped to the box) if the target wins there and it is closer than the incumbent."""
        x = np.clip(x, self.low, self.high)
        sq, wins = self.check(torch.from_numpy(x)[None])
        if float(sq) < self.sq and bool(wins):
            self.sq, self.point = float(sq), x
            return True
        return False

    def check(self, points: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distances of ``points`` (N, m) to ``x0`` and whether the target wins there by the margin,
        in float64 through the chain: the region search's verification (``rows``: one problem, unused)."""
        logits = self.chain.logits(points)
        others = logits.clone()
        others[:, self.target] = -torch.inf
        return (points - self.relax.domain.x0).pow(2).sum(1), logits[:, self.target] - others.amax(1) >= self.margin


def _polish(incumbent: _Incumbent, start: torch.Tensor, deadline: float) -> None:
    """Improve the incumbent by the attack's local search over linear regions from ``start``
    (:func:`~intriguing.attacks.regions.search_regions`), verified by :meth:`_Incumbent.check`.

    Inside one activation pattern the network is affine, so the closest target point there is a
    QP (Eq. 1 restricted to the region). The optimum of the whole problem lies in some region's
    closure; the attack's point is usually in (or next to) it, so the region QP and a few flips of
    the ReLUs nearest its solution reach the optimum far sooner than the tree would. The QPs aim
    for ``POLISH_MARGIN`` above the margin so that their solutions pass the float64 check.
    """
    chain, domain = incumbent.chain, incumbent.relax.domain
    relu_chain = ReluChain(chain.weights, chain.biases, chain.activations)
    best, _, _ = search_regions(relu_chain, domain.x0[None], start.double()[None],
                                torch.tensor([incumbent.sq], dtype=torch.float64), torch.tensor([incumbent.target]),
                                (domain.low, domain.high), POLISH_ROUNDS, incumbent.check,
                                delta=incumbent.margin + POLISH_MARGIN, deadline=deadline)
    incumbent.offer(best[0].numpy())


def _branching_neuron(violations: list[np.ndarray], tolerance: float) -> tuple[int, int] | None:
    """The open neuron whose relaxation is most violated, as ``(layer, index)``; None if all are within tolerance."""
    best, where = tolerance, None
    for k, gaps in enumerate(violations):
        if len(gaps) and gaps.max() > best:
            best, where = float(gaps.max()), (k, int(np.argmax(gaps)))
    return where

