"""Exact operator norms of linear layers, by Lanczos through the layer's own code (Section 4.3, Table 5).

The paper's bounds are compared with the largest singular value of each linear layer as
implemented (padding, stride, dilation, groups included). The layer is never written out as a
matrix: :func:`operator_norm` runs Lanczos on ``A^T A``, with ``A`` the layer's forward map and
``A^T`` its autograd adjoint (for a convolution that is ``conv_transpose2d``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class NormSettings:
    """How exact operator norms are computed: Lanczos stops at relative residual ``tol`` or ``max_steps``.

    The residual ``||A^T A y - theta y|| <= tol * theta`` puts ``theta = sigma^2`` within ``tol``
    (relative) of an eigenvalue of ``A^T A``: the top one, unless a nearly equal one sits just below it
    and the start vector missed it (then ``theta`` is that close below the top, never above). The
    default gives five significant digits of ``sigma``.
    """

    tol: float = 1e-5
    max_steps: int = 1000
    seed: int = 0



class OperatorNorm(NamedTuple):
    """The largest singular value found, the Lanczos steps it took, and whether ``tol`` was reached.

    ``value`` never exceeds the true norm (up to rounding): it is a Ritz value of ``A^T A``.
    """

    value: float
    steps: int
    converged: bool


# Krylov vectors kept before a restart (float64, at most BASIS_BYTES): AlexNet's layers converge within one cycle.
MAX_BASIS, MIN_BASIS, BASIS_BYTES = 300, 20, 1 << 28


def operator_norm(linear_map: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int], *,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  settings: NormSettings = NormSettings()) -> OperatorNorm:
    """The largest singular value of the linear map ``linear_map`` on inputs shaped ``(1, *input_shape)``.

    Lanczos on ``A^T A`` with full reorthogonalisation (restarted from the best Ritz vector when the
    basis is full): a power iteration that keeps its Krylov basis, so that clustered top singular
    values (random matrices, convolutions on large grids) converge in tens of steps instead of
    thousands. It stops when the Ritz value's residual ``||A^T A y - theta y||`` is at most
    ``settings.tol * theta``. ``A^T`` comes from autograd (a backward pass through the map's graph,
    built once: for a convolution that is ``conv_transpose2d``), so any padding mode, stride,
    dilation or group structure is handled by the layer's own code. The map must be linear (no
    bias). The basis is kept in float64; the map runs in ``dtype`` on ``device``.
    """
    shape = (1, *input_shape)
    n = math.prod(shape)
    origin = torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)
    with torch.enable_grad():
        image = linear_map(origin)  # the graph of a linear map is the same at every point: build it once

    def gram(v: torch.Tensor) -> torch.Tensor:  # A^T A v, flat float64
        (back,) = torch.autograd.grad(image, origin, linear_map(v.to(dtype).view(shape)), retain_graph=True)
        return back.reshape(-1).double()

    size = min(n, max(MIN_BASIS, min(MAX_BASIS, BASIS_BYTES // (8 * n))))
    q = torch.randn(n, generator=torch.Generator().manual_seed(settings.seed), dtype=torch.float64).to(device)
    steps = 0
    while True:
        theta, residual, q, used = _lanczos_cycle(gram, q / q.norm(), size, settings.tol)
        steps += used
        converged = residual <= settings.tol * theta
        if converged or steps >= settings.max_steps:
            return OperatorNorm(math.sqrt(max(theta, 0.0)), steps, converged)


def _lanczos_cycle(gram: Callable[[torch.Tensor], torch.Tensor], q: torch.Tensor, size: int,
                   tol: float) -> tuple[float, float, torch.Tensor, int]:
    """Lanczos steps from unit vector ``q`` until the top Ritz value's residual is ``<= tol * theta`` or ``size`` steps.

    Returns the largest Ritz value ``theta``, its residual ``||A^T A y - theta y||`` (0 when the
    Krylov space became invariant: then ``theta`` is exact), the Ritz vector ``y`` (the next
    cycle's start) and the steps used.
    """
    basis = torch.empty(size, q.numel(), dtype=torch.float64, device=q.device)
    basis[0] = q
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(size):
        w = gram(basis[j])
        alphas.append(float(w @ basis[j]))
        w -= alphas[-1] * basis[j] + (betas[-1] * basis[j - 1] if betas else 0.0)  # the three-term recurrence
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)  # full reorthogonalisation against rounding
        beta = float(w.norm())
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        values, vectors = torch.linalg.eigh(tridiagonal)
        theta = float(values[-1])
        invariant = beta <= 1e-12 * max(abs(theta), 1e-300)
        residual = 0.0 if invariant else beta * abs(float(vectors[-1, -1]))
        if residual <= tol * theta or j + 1 == size:
            return theta, residual, vectors[:, -1] @ basis[: j + 1], j + 1
        betas.append(beta)
        basis[j + 1] = w / beta
    raise AssertionError("unreachable: the loop returns at j + 1 == size")
