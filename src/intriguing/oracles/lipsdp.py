"""A tight global L2 Lipschitz constant for MLPs: LipSDP-Neuron (Fazlyab et al. 2019), beside the paper's bound.

Szegedy et al. (2014, Sec. 4.3) bound a network's instability by the product of its layers' operator
norms, which ignores how the layers interact. Fazlyab, Robey, Hassani, Morari and Pappas (2019,
"Efficient and accurate estimation of Lipschitz constants for deep neural networks", Theorem 2)
treat each activation as slope-restricted, ``alpha <= (phi(a) - phi(b)) / (a - b) <= beta``
(ReLU: [0, 1]; sigmoid: [0, 1/4]), and certify ``L = sqrt(rho)`` by the semidefinite program

    minimise rho  s.t.  [A; B]^T [[-2 alpha beta T, (alpha + beta) T], [(alpha + beta) T, -2 T]] [A; B]
                        + diag(-rho I, 0, ..., 0, W_last^T W_last)  <=  0,    T = diag(lambda) >= 0,

with ``A = [blkdiag(W_0, ..., W_{L-2}), 0]`` and ``B = [0, I]``. The result always lies between an
empirical lower bound (the largest Jacobian norm seen, :func:`jacobian_lower_bound`) and the product
bound (:func:`product_bound`).

Size: the matrix is ``(m + n_hidden)`` square. Only the row space of ``W_0`` matters (the network
depends on ``x`` only through ``W_0 x``, and ``W_0 = U S V^T`` with ``V^T`` a co-isometry), so ``W_0``
is replaced by ``U S`` (``n_1 x rank``): for FC100-100-10 the matrix shrinks from 984 to 300.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from intriguing.errors import IntriguingError, check_images
from intriguing.chains import SLOPES, Chain, chain_of

try:  # an optional dependency: pip install 'intriguing[oracles]'
    import cvxpy as cp
except ImportError:  # pragma: no cover - depends on the environment
    cp = None


@dataclass(frozen=True)
class LipschitzBound:
    """A certified global L2 Lipschitz constant of the logits and how it was obtained."""

    value: float
    method: str
    status: str
    seconds: float
    size: int  # side of the semidefinite matrix (0 when no SDP was needed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reduced_first_layer(w0: np.ndarray) -> np.ndarray:
    """``U S`` of the thin SVD of ``W_0`` (rank-revealing): same Lipschitz constant, fewer input dimensions."""
    u, s, _ = np.linalg.svd(w0, full_matrices=False)
    keep = s > s.max() * 1e-12 if len(s) and s.max() > 0 else np.zeros(len(s), bool)
    return u[:, keep] * s[keep]


def _slopes(chain: Chain) -> tuple[np.ndarray, np.ndarray]:
    """Per hidden neuron, the activation's slope range ``(alpha, beta)``."""
    alpha = np.concatenate([np.full(w.shape[0], SLOPES[a][0]) for w, a in zip(chain.weights, chain.activations)])
    beta = np.concatenate([np.full(w.shape[0], SLOPES[a][1]) for w, a in zip(chain.weights, chain.activations)])
    return alpha, beta


def _sdp(chain: Chain) -> tuple[Any, Any, int]:
    """The cvxpy problem of Theorem 2 (LipSDP-Neuron) and its ``rho`` variable.

    The matrix is block tridiagonal over ``(x, h_0, ..., h_{L-2})``: diagonal blocks
    ``-2 alpha beta W_k^T T_k W_k - 2 T_{k-1}`` (``-rho I`` at ``x``, ``+ W_last^T W_last`` at the last),
    off-diagonal ``(alpha + beta) W_k^T T_k``. Built block by block, every entry depends on one
    multiplier only (``alpha = 0`` for ReLU and sigmoid), which keeps cvxpy's canonicalisation small.
    """
    weights = [w.numpy() for w in chain.weights]
    weights[0] = _reduced_first_layer(weights[0])
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights[:-1]]
    rho = cp.Variable(nonneg=True)
    lams = [cp.Variable(w.shape[0], nonneg=True) for w in weights[:-1]]
    slopes = [SLOPES[a] for a in chain.activations]
    blocks = [[np.zeros((p, q)) for q in sizes] for p in sizes]
    blocks[0][0] = -rho * np.eye(sizes[0])
    for k, (w, lam, (alpha, beta)) in enumerate(zip(weights[:-1], lams, slopes)):
        cross = (alpha + beta) * (w.T @ cp.diag(lam))  # (n_k_in, n_k_out), block (k, k + 1)
        blocks[k][k + 1], blocks[k + 1][k] = cross, cross.T
        blocks[k + 1][k + 1] = -2 * cp.diag(lam)
        if alpha * beta != 0:
            blocks[k][k] = blocks[k][k] - 2 * alpha * beta * (w.T @ cp.diag(lam) @ w)
    last = weights[-1]
    blocks[-1][-1] = blocks[-1][-1] + last.T @ last
    M = cp.bmat(blocks)
    return cp.Problem(cp.Minimize(rho), [(M + M.T) / 2 << 0]), rho, sum(sizes)


# Above this matrix side, clarabel's dense KKT system needs many GB (2.7 GB allocations at 300): use SCS.
INTERIOR_POINT_MAX_SIZE = 150
# SCS's stopping tolerances unless the caller gives its own: relative only (rho = L^2 spans many orders of
# magnitude, so an absolute tolerance is too loose for small nets and too tight for large ones). Each SCS
# iteration eigendecomposes the whole matrix, and SCS's defaults (1e-4 both) take thousands of them: on the
# zoo's FC100-100-10 (one thread) 647 s of CPU for 64.5158, against 8 s for 64.5196 here (+0.006%).
SCS_TOLERANCES = {"eps_abs": 1e-9, "eps_rel": 1e-3}


def lipsdp(model: nn.Module, *, solver: str | None = None, **solver_options) -> LipschitzBound:
    """LipSDP-Neuron's global L2 Lipschitz constant of ``model``'s logits (Fazlyab et al. 2019, Theorem 2).

    ``model``: an ``nn.Sequential`` of Flatten/Linear/ReLU/Sigmoid. ``solver``: a cvxpy SDP solver
    (``"CLARABEL"``, interior point, accurate; ``"SCS"``, first order, light on memory, stopped at
    :data:`SCS_TOLERANCES` unless ``solver_options`` give tolerances, e.g. ``eps_abs=1e-4, eps_rel=1e-4``);
    ``None`` picks CLARABEL up to :data:`INTERIOR_POINT_MAX_SIZE`, else SCS. A network without
    activations is linear: its constant is the spectral norm.
    Example: ``lipsdp(zoo.trained("FC100-100-10")).value``.
    """
    if cp is None:
        raise IntriguingError("lipsdp needs cvxpy: pip install 'intriguing[oracles]'")
    chain = chain_of(model)
    start = time.perf_counter()
    if not chain.activations:
        value = float(torch.linalg.matrix_norm(chain.weights[0], ord=2))
        return LipschitzBound(value, "spectral norm", "exact", time.perf_counter() - start, 0)
    problem, rho, size = _sdp(chain)
    solver = solver or ("CLARABEL" if size <= INTERIOR_POINT_MAX_SIZE else "SCS")
    if solver == "SCS" and not {"eps", *SCS_TOLERANCES} & set(solver_options):
        solver_options = {**SCS_TOLERANCES, **solver_options}  # e.g. max_iters alone keeps the tolerances
    try:
        problem.solve(solver=solver, **solver_options)
    except cp.error.SolverError as e:
        raise IntriguingError(f"solver: {solver} failed on LipSDP ({e}); try solver='SCS'") from None
    except (TypeError, AttributeError) as e:  # a setting the solver does not know (each names it its own way)
        if not solver_options:
            raise
        raise IntriguingError(f"solver options {solver_options}: {solver} does not take them ({e}); see its "
                              "documentation for the settings it knows") from None
    if rho.value is None:
        raise IntriguingError(f"solver: {solver} returned status {problem.status!r} for LipSDP; try solver='SCS'")
    return LipschitzBound(math.sqrt(max(float(rho.value), 0.0)), f"LipSDP-Neuron ({solver})", str(problem.status),
                          time.perf_counter() - start, size)


def product_bound(model: nn.Module) -> float:
    """The paper's bound (Sec. 4.3): the product of the layers' spectral norms and activation slopes ``beta``."""
    chain = chain_of(model)
    value = math.prod(float(torch.linalg.matrix_norm(w, ord=2)) for w in chain.weights)
    return value * math.prod(SLOPES[a][1] for a in chain.activations)


def jacobian_lower_bound(model: nn.Module, x: torch.Tensor) -> float:
    """The largest spectral norm of the logits' Jacobian over the inputs ``x`` (N, ...): a lower bound on L.

    Any Jacobian's operator norm is a directional rate of change, so it cannot exceed the global
    Lipschitz constant; sample many points (or attack the Jacobian norm) for a tighter bound.
    """
    check_images(x, "x", (-math.inf, math.inf))
    chain = chain_of(model)
    flat = x.detach().double().cpu().reshape(len(x), -1)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: chain.logits(v[None])[0]))(flat)  # (N, K, m)
    return float(torch.linalg.matrix_norm(jac, ord=2).max())
