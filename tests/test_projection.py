"""The dual Newton projection onto half-spaces in the box, on the problems the refinement gives it: MNIST-like
points (most pixels on the box's faces), float32 margin gradients, and warm starts from a nearby problem."""

from __future__ import annotations

import torch
from test_attacks_internals import matches_clarabel

from intriguing.attacks import projection
from intriguing.attacks.projection import project_to_polyhedron, solve_polyhedron


def mnist_like(seed: int, rows: int = 16, k: int = 5, m: int = 60):
    """Points with about two thirds of their pixels exactly 0, margins ``A`` (float32) sharing a common part
    up to sign (rivals' gradients are alike), and bounds that ``x`` violates and a point in the box satisfies."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(rows, m, generator=gen) - 0.65).clamp(0, 1) / 0.35
    A = torch.randn(rows, 1, m, generator=gen) + 0.5 * torch.randn(rows, k, m, generator=gen)
    gain = torch.einsum("bkm,bm->bk", A, torch.rand(rows, m, generator=gen) - x)  # A (inside - x)
    A, gain = A * gain.sign()[:, :, None], gain.abs()
    b = torch.einsum("bkm,bm->bk", A, x) + (0.5 + 0.4 * torch.rand(rows, k, generator=gen)) * gain
    return x, A, b


def test_points_on_the_box_faces_project_like_clarabel():
    """Most pixels at 0 (on the box's face: at ``lam = 0`` the dual has a kink in each of them), float32
    margins: the projection is the exact one, in the box, feasible, as close as clarabel's."""
    for seed in range(3):
        x, A, b = mnist_like(seed)
        projected = project_to_polyhedron(x, A, b, 0.0, 1.0)
        assert projected.dtype == torch.float32
        assert matches_clarabel(projected, x, A, b, feasibility=1e-5) == len(x)


def test_float32_constraints_give_the_float64_projection():
    """The Hessian built from float32 ``A`` only steers the steps; every tested value is float64, so the point
    is the same as with ``A`` in float64, to float32's precision."""
    x, A, b = mnist_like(3)
    single = project_to_polyhedron(x.double(), A, b, 0.0, 1.0)
    double = project_to_polyhedron(x.double(), A.double(), b.double(), 0.0, 1.0)
    assert single.dtype == torch.float64
    assert torch.allclose(single, double, atol=1e-6)


def counting_evaluations(monkeypatch) -> list[int]:
    """Rows through the dual's evaluations (each a pass over ``A``), recorded as they happen."""
    seen: list[int] = []
    original = projection._Dual.at

    def counted(self, lam):
        seen.append(len(lam))
        return original(self, lam)

    monkeypatch.setattr(projection._Dual, "at", counted)
    return seen


def test_a_warm_start_finds_the_same_point_with_fewer_evaluations(monkeypatch):
    """The refinement starts each projection from the multipliers of the row's last one. From any start the
    answer is the same; from the multipliers of a nearby problem it takes fewer passes over ``A``, and from the
    problem's own multipliers one (the check that they are optimal)."""
    x, A, b = mnist_like(4)
    seen = counting_evaluations(monkeypatch)
    cold, lam = solve_polyhedron(x, A, b, 0.0, 1.0)
    cold_passes = sum(seen)
    assert lam.shape == b.shape and bool((lam >= 0).all())
    seen.clear()
    again, _ = solve_polyhedron(x, A, b, 0.0, 1.0, start=lam)
    assert sum(seen) == len(x)
    assert torch.allclose(again, cold, atol=1e-6)
    moved = A + 0.01 * torch.randn(A.shape, generator=torch.Generator().manual_seed(5))
    near_cold = project_to_polyhedron(x, moved, b, 0.0, 1.0)
    seen.clear()
    near_warm, _ = solve_polyhedron(x, moved, b, 0.0, 1.0, start=lam)
    assert sum(seen) < cold_passes
    assert torch.allclose(near_warm, near_cold, atol=1e-6)
    assert matches_clarabel(near_warm, x, moved, b, feasibility=1e-5) == len(x)


def test_a_rows_projection_does_not_depend_on_the_rows_beside_it():
    """Finished rows leave the batch early and halving rows continue in sub-batches: that is only free if a
    row's arithmetic is its own. Solved alone or among others, each row gets the same bits."""
    x, A, b = mnist_like(6)
    for dtype in (torch.float32, torch.float64):
        together = project_to_polyhedron(x.to(dtype), A.to(dtype), b.to(dtype), 0.0, 1.0)
        alone = torch.cat([project_to_polyhedron(x[i:i + 1].to(dtype), A[i:i + 1].to(dtype), b[i:i + 1].to(dtype),
                                                 0.0, 1.0) for i in range(len(x))])
        assert torch.equal(together, alone)
