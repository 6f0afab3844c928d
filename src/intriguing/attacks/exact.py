"""The exact minimal adversarial perturbation of a linear softmax model, as a convex QP (the oracle).

For an affine classifier ``logits = W x + b`` (softmax regression, the paper's ``FC10(lambda)``),
the paper's problem (Section 4.1, Eq. 1) with the squared L2 norm is a convex quadratic program::

    minimise ||u - x||^2   subject to   (W_t - W_j) u + (b_t - b_j) >= margin  for all j != t,
                                        low <= u <= high,

whose solution ``u`` is the closest point of the box classified as ``t``. Solving it with an
interior-point solver (clarabel) gives the ground truth that the L-BFGS attack is tested and
benchmarked against. It is an oracle, not a hot path: one small sparse QP per example.
"""

from __future__ import annotations

import copy
import math

import clarabel
import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from intriguing.attacks.base import Attack, AttackResult, Found, Task, rms_distortion
from intriguing.attacks.config import check_bounds
from intriguing.attacks.criteria import SAFE_MARGIN, Targeted
from intriguing.errors import IntriguingError

_SOLVED = {clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved}


def affine_weights(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` in float64 with ``model(x) = x.flatten(1) @ W.T + b``, after checking the model is affine.

    ``W`` is the Jacobian at the first input (one backward pass per class); the check compares the
    model's logits with the affine prediction on every input of ``x`` and at the box corner 0.
    """
    x0 = x[:1].detach().double().requires_grad_(True)
    model64 = _float64_copy(model)
    with torch.enable_grad():
        logits0 = model64(x0)[0]
        rows = [torch.autograd.grad(logits0[k], x0, retain_graph=True)[0].flatten() for k in range(len(logits0))]
    weight = torch.stack(rows)  # (classes, pixels)
    bias = logits0.detach() - weight @ x0.detach().flatten()
    with torch.no_grad():
        probe = torch.cat([x.detach().double(), torch.zeros_like(x0)])
        actual = model64(probe)
        predicted = probe.flatten(1) @ weight.T + bias
    error = float((actual - predicted).abs().max())
    if error > 1e-6 * (1.0 + float(actual.abs().max())):
        raise IntriguingError(
            f"model: exact_linear needs an affine (softmax-regression) model such as FC10(1e-4), but its logits "
            f"deviate from the affine fit by {error:.3g}; use LBFGS for non-linear models"
        )
    return weight.cpu().numpy(), bias.cpu().numpy()


def _float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy in eval mode (the caller's model keeps its dtype and mode)."""
    return copy.deepcopy(model).double().eval().requires_grad_(False)


def _solve_qp(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, target: int, low: float, high: float,
              margin: float) -> np.ndarray | None:
    """The closest point to ``x`` in the box with every logit margin of ``target`` at least ``margin``."""
    m = len(x)
    others = [j for j in range(len(bias)) if j != target]
    margin_rows = weight[target] - weight[others]  # (classes-1, pixels)
    identity = sp.identity(m, format="csc")
    # clarabel's form: min 1/2 u'Pu + q'u  s.t.  A u + s = b, s >= 0.
    P = (2.0 * identity).tocsc()
    q = -2.0 * x
    A = sp.vstack([sp.csc_matrix(-margin_rows), identity, -identity]).tocsc()
    b = np.concatenate([bias[target] - bias[others] - margin, np.full(m, high), np.full(m, -low)])
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    solution = clarabel.DefaultSolver(P, q, A, b, [clarabel.NonnegativeConeT(A.shape[0])], settings).solve()
    if solution.status not in _SOLVED:
        return None
    return np.clip(np.asarray(solution.x), low, high)


class ExactLinear(Attack):
    """The exact targeted attack on an affine model, under the common contract (see :func:`exact_linear`)."""

    def __init__(self, *, bounds=(0.0, 1.0), margin: float = SAFE_MARGIN):
        if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
            raise IntriguingError(f"margin: expected a finite number >= 0, got {margin!r}")
        self.bounds, self.margin = check_bounds(bounds), float(margin)

    def record(self) -> dict:
        return {"method": "exact QP (clarabel)", "bounds": list(self.bounds), "margin": self.margin}

    def _search(self, model: nn.Module, task: Task) -> Found:
        """One QP per example; a target that no point of the box reaches keeps the clean input."""
        if not isinstance(task.criterion, Targeted):
            raise IntriguingError("criterion: exact_linear solves the targeted problem; pass target=classes")
        x = task.x
        weight, bias = affine_weights(model, x)
        flat = x.detach().flatten(1).double().cpu().numpy()
        low, high = task.bounds
        adversarial = flat.copy()
        for i, (point, goal) in enumerate(zip(flat, task.criterion.classes.tolist())):
            solution = _solve_qp(point, weight, bias, goal, low, high, self.margin)
            if solution is not None:
                adversarial[i] = solution
        adversarial = torch.from_numpy(adversarial).to(x).reshape(x.shape)
        n = len(x)
        return Found(adversarial=adversarial, distortion_paper=rms_distortion(x, adversarial),
                     c=torch.full((n,), math.nan), evaluations=torch.zeros(n, dtype=torch.int64))


def exact_linear(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, bounds=(0.0, 1.0),
                 margin: float = SAFE_MARGIN) -> AttackResult:
    """Exact minimal L2 targeted perturbation of an affine softmax model (QP, Section 4.1 Eq. 1).

    Args:
        model: an affine classifier returning logits, e.g. ``zoo.trained("FC10(1e-4)")``.
        x: inputs (N, ...) inside ``bounds``.
        target: int64 (N,) classes to reach.
        bounds: the box the adversarial example must stay in.
        margin: the target logit must beat every other by this much (in logits), so that the
            float32 result is classified as the target despite rounding (the same margin the
            L-BFGS attack demands); it adds a negligible ``margin / ||W_t - W_j||`` to the distance.

    Returns:
        An :class:`AttackResult` (``c`` NaN, ``evaluations`` 0, ``distortion_paper`` equal to
        ``distortion``), checked and verified like every attack's (:class:`~intriguing.attacks.Attack`).
        A target that no point of the box reaches is a failure.
    """
    return ExactLinear(bounds=bounds, margin=margin)(model, x, target=target)
