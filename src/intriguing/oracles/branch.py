"""Branch and bound over ReLU phases with exact convex-QP node bounds: the fast solver of the exact MIP.

The big-M program of :mod:`~intriguing.oracles.mip` (Tjeng et al. 2019) has a quadratic objective
over all ``m`` pixels. A solver that bounds nodes with linear programs (SCIP) must approximate
``||r||^2`` by cutting planes, hundreds of LP rounds per node for ``m = 784``. Relaxing the binaries
of the big-M encoding to ``[0, 1]`` gives exactly the triangle relaxation of each undecided ReLU,
so every node's relaxation is a convex QP, solved here to optimality by an interior-point method
(clarabel). Branching fixes one ReLU's phase (active: ``a = z >= 0``; inactive: ``a = 0 >= z``), the
node with the smallest bound is expanded first, and the tree stops when the incumbent is within the
relative ``gap`` of the smallest open bound: the same MIP, solved with exact node bounds.
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

from intriguing.oracles.network import Chain
from intriguing.oracles.propagation import Bounds, Domain

_SOLVED = {clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved}
ACTIVE, INACTIVE, OPEN = 1, -1, 0


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
        self.chain, self.hidden = chain, [(lo.numpy(), hi.numpy()) for lo, hi in hidden]
        self.lay = lay = _Layout(chain)
        self.x0 = domain.x0.numpy()
        eq_rows, eq_rhs = [], []  # z_k - W_k h_{k-1} = b_k
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

    def phases(self, k: int, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Effective phases of layer ``k``: stable neurons from the bounds, the others as branched."""
        lo, hi = self.hidden[k]
        return np.where(lo >= 0, ACTIVE, np.where(hi <= 0, INACTIVE, fixed)), lo, hi

    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        """Variable bounds: the domain's box for ``x``, the layer bounds for ``z_k``, ``[0, max(u, 0)]`` for ``h_k``."""
        lows = np.concatenate([self.domain.low.numpy()] + [np.r_[lo, np.zeros_like(lo)] for lo, _ in self.hidden])
        highs = np.concatenate([self.domain.high.numpy()] + [np.r_[hi, np.maximum(hi, 0)] for _, hi in self.hidden])
        return lows, highs

    def _constraints(self, fixed: list[np.ndarray]) -> tuple[sp.csc_matrix, np.ndarray, int]:
        """``(A, b, n_eq)`` for clarabel's ``A v + s = b``: the first ``n_eq`` rows equalities, the rest ``<=``."""
        eq, eq_rhs = [self.equalities[0]], [self.equalities[1]]
        ineq, ineq_rhs = [self.classes[0]], [self.classes[1]]
        lows, highs = self._box()
        for k, phase_k in enumerate(fixed):
            phase, lo, hi = self.phases(k, phase_k)
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

    def solve(self, fixed: list[np.ndarray]) -> tuple[float, np.ndarray] | None:
        """The node QP's optimum ``(||x - x0||^2, variables)``, or None if the node is infeasible."""
        A, b, n_eq = self._constraints(fixed)
        cones = [clarabel.ZeroConeT(n_eq), clarabel.NonnegativeConeT(A.shape[0] - n_eq)]
        solution = _clarabel(self.P, self.q, A, b, cones)
        if solution is None:
            return None
        value = min(solution.obj_val, solution.obj_val_dual) + float(self.x0 @ self.x0)
        return max(value, 0.0), np.asarray(solution.x)

    def tighten(self, radius: float) -> None:
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

    def violations(self, v: np.ndarray, fixed: list[np.ndarray]) -> list[np.ndarray]:
        """Per layer, how far each open neuron's relaxed ``h`` lies above ``relu(z)`` (0 where decided)."""
        out = []
        for k, phase_k in enumerate(fixed):
            phase, _, _ = self.phases(k, phase_k)
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
                     tolerance: float = 1e-7, tighten: bool = True) -> Outcome:
    """Best-first branch and bound on ReLU phases; see the module docstring.

    ``start`` (m,) is a known adversarial point (the attack's), the first incumbent. A node whose
    relaxed solution satisfies every ReLU (within ``tolerance``) is solved exactly and not split.
    """
    began = time.perf_counter()
    relax = _Relaxation(chain, domain, hidden, target, margin)
    best_sq, best = math.inf, None
    if start is not None and _wins(chain, start.numpy(), target, margin):
        best_sq, best = float(((start - domain.x0) ** 2).sum()), start.numpy()
    if tighten:
        relax.tighten(min(domain.radius, math.sqrt(best_sq)))
    root = [np.zeros(w.shape[0], dtype=np.int8) for w in chain.weights[:-1]]
    heap, counter, nodes, closed = [(0.0, 0, root)], 1, 0, False
    while heap and not closed and time.perf_counter() - began <= time_limit:
        closed = heap[0][0] >= best_sq * (1 - gap)
        if closed:
            break
        _, _, fixed = heapq.heappop(heap)
        nodes += 1
        solved = relax.solve(fixed)
        if solved is None or solved[0] >= best_sq * (1 - gap):
            continue
        value, v = solved
        x = np.clip(v[: relax.lay.m], domain.low.numpy(), domain.high.numpy())
        sq = float(((x - relax.x0) ** 2).sum())
        if sq < best_sq and _wins(chain, x, target, margin - tolerance):
            best_sq, best = sq, x
        choice = _branching_neuron(relax.violations(v, fixed), tolerance)
        if choice is None:
            continue  # the relaxation is exact here: its optimum is this node's optimum
        for phase in (ACTIVE, INACTIVE):
            child = [f.copy() for f in fixed]
            child[choice[0]][choice[1]] = phase
            heapq.heappush(heap, (value, counter, child))
            counter += 1
    lower = min(heap[0][0], best_sq) if heap else best_sq
    status = "optimal" if closed or not heap else "timelimit"
    if best is None and status == "optimal":
        status, lower = "infeasible", math.inf
    return Outcome(status, best, best_sq, lower, nodes, time.perf_counter() - began, relax.hidden)


def _branching_neuron(violations: list[np.ndarray], tolerance: float) -> tuple[int, int] | None:
    """The open neuron whose relaxation is most violated, as ``(layer, index)``; None if all are within tolerance."""
    best, where = tolerance, None
    for k, gaps in enumerate(violations):
        if len(gaps) and gaps.max() > best:
            best, where = float(gaps.max()), (k, int(np.argmax(gaps)))
    return where


def _wins(chain: Chain, x: np.ndarray, target: int, margin: float) -> bool:
    logits = chain.logits(torch.from_numpy(np.asarray(x, dtype=np.float64))[None])[0]
    others = torch.cat([logits[:target], logits[target + 1:]])
    return bool(logits[target] - others.max() >= margin)
