"""The directions of Section 3 besides the units: seeded random directions of several laws.

The paper compares each unit ``e_i`` with random directions ``v`` (Sec. 3, Fig. 2) without saying
more of their law than "random". A projection on an isotropic Gaussian direction is dominated by
the few high-variance directions of the activations, so two more laws test how much the conclusion
owes to that choice: Gaussian after whitening, and columns of random rotations of the unit basis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from intriguing.errors import IntriguingError, unknown_name_error

LAWS = ("gaussian", "whitened", "rotation")
# Relative eigenvalue below which a covariance direction counts as "no variance" when whitening.
WHITENING_RTOL = 1e-6
# The random stream of the random-images baseline; law ``LAWS[i]`` draws from stream ``1 + i``.
RANDOM_IMAGES_STREAM = 0


def random_stream(seed: int, stream: int) -> np.random.Generator:
    """The random stream for one purpose of one seed: laws and baselines never share draws."""
    if seed < 0:
        raise IntriguingError(f"seed: expected a non-negative integer, got {seed}")
    return np.random.default_rng([seed, stream])


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Run torch on one thread: threaded LAPACK on these small (d <= 1000) matrices is slower by orders
    of magnitude than one thread whenever the cores are busy (measured: eigh of 100x100, 0.8 s vs 1 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def whitening_matrix(activations: torch.Tensor) -> torch.Tensor:
    """``W = Cov^{-1/2}`` of the activations, (d, d) float64, restricted to the directions the data varies along.

    Dead units and other null directions have no variance to whiten; they are dropped (pseudo-inverse)
    rather than amplified without bound.
    """
    x = activations.double()
    centred = x - x.mean(0)
    with _single_threaded():
        covariance = centred.T @ centred / max(len(x) - 1, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    keep = eigenvalues > WHITENING_RTOL * eigenvalues.max().clamp_min(torch.finfo(torch.float64).tiny)
    basis = eigenvectors[:, keep]
    return (basis / eigenvalues[keep].sqrt()) @ basis.T


def _haar_rotations(d: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """The first ``count`` columns of as many independent Haar-random rotations of R^d as needed."""
    columns = []
    with _single_threaded():
        for _ in range(-(-count // d)):
            q, r = torch.linalg.qr(torch.from_numpy(rng.standard_normal((d, d))))
            columns.append(q * torch.sign(torch.diagonal(r)))  # the sign fix makes Q Haar-distributed
    return torch.cat(columns, dim=1)[:, :count]


def random_directions(law: str, activations: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` seeded unit-norm directions (the columns of a (d, count) float32 tensor) drawn from ``law``.

    * ``gaussian``: isotropic Gaussian in activation space, the paper's random direction ``v`` (Sec. 3);
    * ``whitened``: the same in the centred, whitened coordinates ``z = W (phi - mean)``, ``W = Cov^{-1/2}``.
      Since ``<z, g> = <phi, W g> + const``, the direction in activation space is ``W g``: every axis
      of the data then counts equally, instead of the few high-variance ones dominating;
    * ``rotation``: columns of Haar-random rotations of the unit basis (Network Dissection's rotated
      bases). One column has the ``gaussian`` law, but the columns of a rotation are orthogonal, like units.

    ``activations`` (N, d) give the dimension ``d`` and, for ``whitened``, the covariance.
    """
    if law not in LAWS:
        raise unknown_name_error("direction law", law, LAWS)
    if count < 1:
        raise IntriguingError(f"count: expected at least 1 random direction, got {count}")
    d = activations.shape[1]
    rng = random_stream(seed, 1 + LAWS.index(law))
    if law == "rotation":
        directions = _haar_rotations(d, count, rng)
    else:
        directions = torch.from_numpy(rng.standard_normal((d, count)))
        if law == "whitened":
            directions = whitening_matrix(activations) @ directions
    return (directions / directions.norm(dim=0)).float()


def both_signs(directions: torch.Tensor) -> torch.Tensor:
    """Each direction ``v`` followed by ``-v`` (as columns ``[v_1 .. v_D, -v_1 .. -v_D]``).

    A random direction has no preferred sign, so Section 3's top-k of ``v`` and of ``-v`` both count.
    """
    return torch.cat([directions, -directions], dim=1)
