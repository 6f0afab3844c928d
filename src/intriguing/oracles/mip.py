"""The exact minimal adversarial distortion of a small ReLU network, as a mixed-integer program (SCIP).

Szegedy et al. (2014, Sec. 4.1, Eq. 1) ask for the smallest ``r`` with ``x + r`` in the box
``[0, 1]^m`` classified as ``t``; their L-BFGS attack approximates it. For a ReLU network the
problem is solvable exactly, as in Tjeng, Xiao and Tedrake (2019, "Evaluating robustness of neural
networks with mixed integer programming", MIPVerify)::

    minimise  ||r||^2   subject to   x + r in the box,   logit_t(x + r) >= logit_j(x + r) + margin  for all j,

with every ReLU ``a = max(z, 0)`` with bounds ``l < 0 < u`` written with one binary ``d`` (big-M):
``a >= z, a >= 0, a <= z - l (1 - d), a <= u d``. The bounds come from bound propagation
(:mod:`~intriguing.oracles.propagation`) over the box intersected with the L2 ball whose radius is a
known adversarial distortion (the attack's: the optimum lies inside it); neurons whose bounds do not
straddle 0 are fixed to their linear piece, without a binary. SCIP (``pyscipopt``) solves it by
branch and bound; the result is the proven optimum or, at the time limit, the bracket
``[lower, upper]``. It is an oracle, not a hot path: one MIP per example.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from intriguing.errors import IntriguingError, check_images, check_labels, check_non_negative
from intriguing.numerics import subnormals_kept
from intriguing.oracles.branch import branch_and_bound
from intriguing.oracles.certify import _upper_l2
from intriguing.chains import Chain, chain_of, flat_inputs
from intriguing.oracles.propagation import Bounds, Domain, layer_bounds

try:  # an optional dependency: pip install 'intriguing[oracles]'
    import pyscipopt
except ImportError:  # pragma: no cover - depends on the environment
    pyscipopt = None


@dataclass
class ExactResult:
    """The exact problem for one example: the optimum, or a bracket, and what it cost.

    ``l2`` is ``||r||_2`` of the best point found (NaN if none), ``lower_l2`` the proven lower
    bound; ``rms`` and ``lower_rms`` are the same divided by ``sqrt(m)`` (the paper's measure, as
    :func:`intriguing.attacks.rms_distortion`). ``status`` is SCIP's (``optimal``, ``gaplimit``,
    ``timelimit``, ``infeasible``, ...) or ``"already"`` when ``x`` is classified as the target.
    ``margin`` is ``logit_t - max_j logit_j`` of ``adversarial`` recomputed in float64 (``>= -1e-6``
    up to the solver's feasibility tolerance). ``binaries`` counts unstable ReLUs, ``stable`` the
    neurons fixed by bound propagation. ``seconds`` is wall-clock time (what ``time_limit`` limits),
    ``cpu_seconds`` the process CPU time of the solve (the steadier measure on a shared machine).
    """

    status: str
    l2: float
    lower_l2: float
    rms: float
    lower_rms: float
    gap: float
    nodes: int
    seconds: float
    binaries: int
    stable: int
    margin: float
    cpu_seconds: float = math.nan
    adversarial: torch.Tensor | None = field(default=None, repr=False)

    @property
    def proven(self) -> bool:
        """The optimum is proven (to SCIP's relative gap tolerance)."""
        return self.status in ("optimal", "gaplimit", "already")

    def to_dict(self) -> dict[str, Any]:
        """Every field but the image, plus ``proven`` (JSON-ready)."""
        out = {k: v for k, v in self.__dict__.items() if k != "adversarial"}
        return {**out, "proven": self.proven}


def exact_minimal_distortion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                             upper: torch.Tensor | None = None, start: torch.Tensor | None = None,
                             time_limit: float = 60.0, gap: float = 1e-4, margin: float = 0.0,
                             method: str = "linear", solver: str = "bnb", bounds: tuple[float, float] = (0.0, 1.0)) -> list[ExactResult]:
    """Solve the exact minimal targeted L2 distortion for each example (one MIP each).

    ``model``: an ``nn.Sequential`` of Flatten/Linear/ReLU; ``x``: (N, ...) inside ``bounds``;
    ``target``: (N,) int64. ``upper`` (N,): known RMS distortions (e.g. ``AttackResult.distortion``)
    bounding the search ball; ``start`` (N, ...): the adversarial points themselves, handed to SCIP as
    a first incumbent (and used for ``upper`` when it is not given, where the target wins there). Without either the ball is the
    whole box, whose looser bounds make the MIP much harder. ``time_limit`` seconds and relative
    ``gap`` per example. Example::

        found = LBFGS()(model, x, target=t)
        exact = exact_minimal_distortion(model, x, t, start=found.adversarial)
        ratios = found.distortion / torch.tensor([e.rms for e in exact])
    """
    check_images(x, "x", bounds)
    _check_settings(time_limit, gap, margin)
    chain = chain_of(model, allowed=("relu",))
    flat = flat_inputs(chain, x)
    check_labels(target, "target", len(x), chain.num_classes)
    starts = None
    if start is not None:
        check_images(start, "start", bounds)
        if start.shape != x.shape:
            raise IntriguingError(f"start: expected the shape of x {tuple(x.shape)}, got {tuple(start.shape)}")
        starts = flat_inputs(chain, start)
        if upper is None:  # a start the target does not win (a failed attack) bounds nothing: search the box
            logits = chain.logits(starts)
            wins = logits.argmax(1) == target.cpu()
            upper = torch.where(wins, (starts - flat).norm(dim=1) / math.sqrt(flat.shape[1]), math.nan)
    caps = _upper_l2(flat, upper, bounds)
    out = []
    with subnormals_kept():  # exact answers: a flushed bound can turn a feasible problem infeasible
        for i in range(len(flat)):
            began = time.process_time()
            out.append(solve_exact(chain, flat[i], int(target[i]), caps[i], start=None if starts is None else starts[i],
                                   time_limit=time_limit, gap=gap, margin=margin, method=method, solver=solver,
                                   bounds=bounds))
            out[-1].cpu_seconds = time.process_time() - began
    return out


def _check_settings(time_limit: float, gap: float, margin: float) -> None:
    """A negative margin lets ``x`` itself "reach" the target (distortion 0, reported as exact); NaNs solve nothing."""
    if not _real(time_limit) or not time_limit > 0:
        raise IntriguingError(f"time_limit: expected a number of seconds > 0 (inf: no limit), got {time_limit!r}")
    check_non_negative("gap", gap, " (relative)")
    check_non_negative("margin", margin, " (logits by which the target must win)")


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def solve_exact(chain: Chain, x0: torch.Tensor, target: int, upper_l2: float, *, start: torch.Tensor | None = None,
                time_limit: float = 60.0, gap: float = 1e-4, margin: float = 0.0, method: str = "linear",
                solver: str = "bnb", bounds: tuple[float, float] = (0.0, 1.0)) -> ExactResult:
    """One exact problem for the flat float64 input ``x0`` (m,), searched within L2 radius ``upper_l2``."""
    logits = chain.logits(x0[None])[0]
    if logits[target] - _others_max(logits, target) >= margin:
        return _record(chain, x0, target, "already", x0.clone(), 0.0, 0, 0.0, [])
    domain = Domain.l2(x0, upper_l2 * (1 + 1e-6) + 1e-9, bounds)  # the optimum is inside (or on) the ball
    hidden = layer_bounds(chain, domain, method)
    if solver == "bnb":
        out = branch_and_bound(chain, domain, hidden, target, margin=margin, start=start, time_limit=time_limit,
                               gap=gap)
        point = None if out.point is None else torch.from_numpy(out.point)
        tightened = [(torch.from_numpy(lo), torch.from_numpy(hi)) for lo, hi in out.hidden]
        return _record(chain, x0, target, out.status, point, out.lower_sq, out.nodes, out.seconds, tightened)
    if solver != "scip":
        raise IntriguingError(f"solver: expected 'bnb' or 'scip', got {solver!r}")
    if pyscipopt is None:
        raise IntriguingError("solver='scip' needs pyscipopt: pip install 'intriguing[oracles]'")
    problem = _Problem(chain, domain, hidden, target, margin)
    problem.configure(time_limit, gap)
    if start is not None:
        problem.try_start(start)
    problem.model.optimize()
    return problem.result(x0, hidden)


def _record(chain: Chain, x0: torch.Tensor, target: int, status: str, point: torch.Tensor | None, lower_sq: float,
            nodes: int, seconds: float, hidden: Bounds) -> ExactResult:
    """An :class:`ExactResult` for the best point found and the proven lower bound on ``||r||^2``."""
    scale = math.sqrt(len(x0))
    l2, margin = math.nan, math.nan
    if point is not None:
        l2 = float((point - x0).norm())
        logits = chain.logits(point[None])[0]
        margin = float(logits[target] - _others_max(logits, target))
    lower_l2 = math.sqrt(max(lower_sq, 0.0))
    if not math.isnan(l2):
        lower_l2 = min(lower_l2, l2)
    gap = (l2**2 - lower_l2**2) / max(l2**2, 1e-300) if l2 > 0 else (0.0 if l2 == 0 else math.inf)
    unstable = sum(int(((lo < 0) & (hi > 0)).sum()) for lo, hi in hidden)
    total = sum(len(lo) for lo, _ in hidden)
    return ExactResult(status, l2, lower_l2, l2 / scale, lower_l2 / scale, gap, nodes, seconds, unstable,
                       total - unstable, margin, adversarial=point)


def _others_max(logits: torch.Tensor, target: int) -> torch.Tensor:
    others = torch.cat([logits[:target], logits[target + 1:]])
    return others.max()


class _Problem:
    """The SCIP model: input variables, one layer of ReLU encodings per hidden layer, the class constraints."""

    def __init__(self, chain: Chain, domain: Domain, hidden: Bounds, target: int, margin: float):
        self.chain, self.domain, self.hidden, self.target = chain, domain, hidden, target
        self.model = model = pyscipopt.Model("exact-minimal-distortion")
        model.hideOutput()
        x0, low, high = domain.x0.tolist(), domain.low.tolist(), domain.high.tolist()
        self.inputs = [model.addVar(f"x{i}", lb=low[i], ub=high[i]) for i in range(len(x0))]
        self.objective = model.addVar("sq", lb=0.0, ub=domain.radius**2)
        # One epigraph variable per pixel: SCIP cuts each univariate square separately, which
        # approximates the separable objective far faster than cuts on the whole sum.
        self.squares = [model.addVar(f"s{i}", lb=0.0) for i in range(len(x0))]
        for v, s, c in zip(self.inputs, self.squares, x0):
            model.addCons((v - c) * (v - c) <= s)
        model.addCons(pyscipopt.quicksum(self.squares) <= self.objective)
        model.setObjective(self.objective, "minimize")
        self.layers: list[list[tuple]] = []  # per hidden layer, per neuron: (z var | None, a var | None, d var | None)
        h = list(self.inputs)
        for k in range(len(chain.activations)):
            h = self._relu_layer(k, h)
        out = self._affine(len(chain.weights) - 1, h)
        for j in range(chain.num_classes):
            if j != target:
                model.addCons(out[target] - out[j] >= margin)

    def _affine(self, k: int, h: list) -> list:
        """Expressions ``W_k h + b_k``, skipping inputs fixed at zero (``None``)."""
        w, b = self.chain.weights[k].tolist(), self.chain.biases[k].tolist()
        live = [(i, v) for i, v in enumerate(h) if v is not None]
        return [pyscipopt.quicksum(row[i] * v for i, v in live if row[i] != 0.0) + bias for row, bias in zip(w, b)]

    def _relu_layer(self, k: int, h: list) -> list:
        """Big-M encoding (Tjeng et al. 2019, Sec. 3) of ``a = relu(W_k h + b_k)``; stable neurons need no binary."""
        low, high = (t.tolist() for t in self.hidden[k])
        out, record = [], []
        for j, expr in enumerate(self._affine(k, h)):
            if high[j] <= 0:
                out.append(None)
                record.append((None, None, None))
                continue
            z = self.model.addVar(f"z{k}_{j}", lb=low[j], ub=high[j])
            self.model.addCons(z == expr)
            if low[j] >= 0:
                out.append(z)
                record.append((z, None, None))
                continue
            a = self.model.addVar(f"a{k}_{j}", lb=0.0, ub=high[j])
            d = self.model.addVar(f"d{k}_{j}", vtype="B")
            self.model.addCons(a >= z)
            self.model.addCons(a <= z - low[j] * (1 - d))
            self.model.addCons(a <= high[j] * d)
            out.append(a)
            record.append((z, a, d))
        self.layers.append(record)
        return out

    def configure(self, time_limit: float, gap: float) -> None:
        self.model.setParam("limits/time", float(time_limit))
        self.model.setParam("limits/gap", float(gap))
        self.model.setParam("randomization/randomseedshift", 0)
        # SCIP's NLP heuristics (Ipopt dives, undercover) cost most of the time on this convex MIQP and
        # rarely beat the attack's point offered as a start.
        self.model.setHeuristics(pyscipopt.SCIP_PARAMSETTING.OFF)

    def try_start(self, start: torch.Tensor) -> None:
        """Offer the attack's adversarial point as an incumbent (SCIP checks it and drops it if infeasible)."""
        sol = self.model.createSol()
        point = start.double().clamp(self.domain.low, self.domain.high)
        for v, value in zip(self.inputs, point.tolist()):
            self.model.setSolVal(sol, v, value)
        self.model.setSolVal(sol, self.objective, float((point - self.domain.x0).pow(2).sum()))
        for s, value in zip(self.squares, (point - self.domain.x0).pow(2).tolist()):
            self.model.setSolVal(sol, s, value)
        pre = self.chain.pre_activations(point[None])
        for record, z_k in zip(self.layers, pre):
            for (z, a, d), value in zip(record, z_k[0].tolist()):
                if z is not None:
                    self.model.setSolVal(sol, z, value)
                if a is not None:
                    self.model.setSolVal(sol, a, max(value, 0.0))
                    self.model.setSolVal(sol, d, 1.0 if value > 0 else 0.0)
        self.model.addSol(sol, free=True)

    def result(self, x0: torch.Tensor, hidden: Bounds) -> ExactResult:
        """Read SCIP's outcome into an :class:`ExactResult`."""
        model = self.model
        status = model.getStatus()
        lower_sq = max(model.getDualbound(), 0.0) if status != "infeasible" else math.inf
        point = None
        if model.getNSols() > 0:
            sol = model.getBestSol()
            point = torch.tensor([model.getSolVal(sol, v) for v in self.inputs], dtype=torch.float64)
        return _record(self.chain, x0, self.target, status, point, lower_sq, int(model.getNTotalNodes()),
                       float(model.getSolvingTime()), hidden)
