"""The attack's numerical building blocks against trusted references: the two-loop recursion
(L-BFGS memory), clarabel (projections onto half-spaces within the box), and the margin's sign."""

from __future__ import annotations

import clarabel
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from intriguing.attacks.criteria import reached, success_margin
from intriguing.attacks.memory import CompactMemory
from intriguing.attacks.projection import project_to_halfspace, project_to_polyhedron



def two_loop(q, pairs, c):
    """Textbook L-BFGS two-loop recursion (Nocedal & Wright, Alg. 7.4) for one row, with each pair's
    ``y`` corrected to the penalty ``c``; pairs failing the curvature test are skipped."""
    pairs = [(s, y + 2 * (c - c_at) * s) for s, y, c_at in pairs]
    pairs = [(s, y) for s, y in pairs if s @ y > 1e-8 * s.norm() * y.norm()]
    if not pairs:
        return q / q.norm()
    alphas = []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (s @ y)
        q = q - alpha * y
        alphas.append(alpha)
    s, y = pairs[-1]
    r = (s @ y) / (y @ y) * q
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        r = r + (alpha - (y @ r) / (s @ y)) * s
    return r


def test_compact_memory_equals_the_two_loop_recursion():
    torch.manual_seed(0)
    rows, m, size = 4, 12, 5
    memory = CompactMemory(rows, m, size, torch.zeros(1, dtype=torch.float64))
    hessians = torch.randn(rows, m, m, dtype=torch.float64)
    hessians = hessians @ hessians.transpose(1, 2) + torch.eye(m, dtype=torch.float64)
    c = torch.full((rows,), 0.5, dtype=torch.float64)
    events = []
    for step in range(9):
        s = torch.randn(rows, m, dtype=torch.float64)
        y = torch.einsum("bij,bj->bi", hessians, s) + 2 * c[:, None] * s
        stored = torch.rand(rows) > 0.3
        stored[0] = step != 7  # rows store independently: each keeps its own last `size` pairs
        memory.add(stored, s, y, c)
        events.append([(s[b], y[b], float(c[b])) if stored[b] else None for b in range(rows)])
        if step == 5:  # a new c: the stored pairs must be corrected, some lose positive curvature
            c = c * torch.tensor([3.0, 0.2, 1.0, 5.0], dtype=torch.float64)
    memory.forget(torch.tensor([False, False, False, True]))
    q = torch.randn(rows, m, dtype=torch.float64)
    applied = memory.apply(q, c)
    for b in range(rows):
        pairs = [event[b] for event in events if event[b] is not None][-size:] if b != 3 else []
        assert torch.allclose(applied[b], two_loop(q[b], pairs, float(c[b])), atol=1e-10)


def quadratic_pairs(rows, m, steps, seed):
    """Curvature pairs of one random convex quadratic per row, measured at penalty ``c`` (which
    changes after step 4), and per step which rows store their pair (all at step 2, none at step 3)."""
    gen = torch.Generator().manual_seed(seed)
    hessians = torch.randn(rows, m, m, dtype=torch.float64, generator=gen)
    hessians = hessians @ hessians.transpose(1, 2) + torch.eye(m, dtype=torch.float64)
    c = torch.full((rows,), 0.5, dtype=torch.float64)
    for step in range(steps):
        if step == 5:
            c = c * torch.linspace(0.2, 5.0, rows, dtype=torch.float64)
        s = torch.randn(rows, m, dtype=torch.float64, generator=gen)
        stored = torch.rand(rows, generator=gen) > 0.3
        stored[:] = True if step == 2 else False if step == 3 else stored
        yield s, torch.einsum("bij,bj->bi", hessians, s) + 2 * c[:, None] * s, stored, c


def test_memory_used_as_the_solver_uses_it_matches_the_two_loop_recursion():
    """Pairs written into the memory's own buffers, a direction after every pair (the pair is
    inserted by that same pass), the negated form, and rows dropped half-way (``keep``)."""
    rows, m, size = 5, 12, 4
    memory = CompactMemory(rows, m, size, torch.zeros(1, dtype=torch.float64))
    alive, history = torch.arange(rows), [[] for _ in range(rows)]
    gen = torch.Generator().manual_seed(1)
    for step, (s, y, stored, c) in enumerate(quadratic_pairs(rows, m, 11, seed=1)):
        if step == 7:  # the batch thins out: rows 1 and 3 leave
            alive = torch.tensor([0, 2, 4])
            memory.keep(alive)
        s_buffer, y_buffer = memory.pair_buffers()
        s_buffer.copy_(s[alive])
        y_buffer.copy_(y[alive])
        memory.add(stored[alive], s_buffer, y_buffer, c[alive])
        for b in alive[stored[alive]].tolist():
            history[b].append((s[b], y[b], float(c[b])))
        q = torch.randn(len(alive), m, dtype=torch.float64, generator=gen)
        negative = step % 2 == 0
        applied = memory.apply(memory.q_buffer().copy_(q), c[alive], negative=negative).clone()
        for i, b in enumerate(alive.tolist()):
            expected = two_loop(q[i], history[b][-size:], float(c[b]))
            assert torch.allclose(applied[i], -expected if negative else expected, atol=1e-10)


def test_negated_direction_is_exactly_the_negation_and_a_row_ignores_its_batch():
    rows, m, size = 4, 10, 3
    batch, twin, alone = (CompactMemory(n, m, size, torch.zeros(1)) for n in (rows, rows, 1))
    q = torch.randn(rows, m, generator=torch.Generator().manual_seed(2))
    for s, y, stored, c in quadratic_pairs(rows, m, 7, seed=2):
        s, y, c = s.float(), y.float(), c.float()
        for memory, keep in ((batch, slice(None)), (twin, slice(None)), (alone, slice(2, 3))):
            memory.add(stored[keep], s[keep], y[keep], c[keep])
        plus = batch.apply(q, c).clone()
        assert torch.equal(twin.apply(q, c, negative=True), -plus)  # bitwise
        assert torch.allclose(alone.apply(q[2:3], c[2:3])[0], plus[2], rtol=1e-5, atol=1e-6)


def clarabel_projection(x, A, b, low, high):
    """min |u - x|^2 s.t. A u >= b, low <= u <= high, by clarabel (None if infeasible)."""
    m = len(x)
    identity = sp.identity(m, format="csc")
    constraints = sp.vstack([sp.csc_matrix(-A), identity, -identity]).tocsc()
    rhs = np.concatenate([-b, np.full(m, high), np.full(m, -low)])
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    solution = clarabel.DefaultSolver(identity, -x, constraints, rhs, [clarabel.NonnegativeConeT(len(rhs))],
                                      settings).solve()
    return np.asarray(solution.x) if solution.status == clarabel.SolverStatus.Solved else None


def matches_clarabel(projected, x, A, b, feasibility: float) -> int:
    """Check each row's projection onto ``A u >= b`` in the unit box against clarabel's: inside the box,
    feasible to ``feasibility`` (relative), as close to ``x`` to 1e-4; returns how many rows clarabel solved."""
    solved = 0
    for i in range(len(x)):
        point, matrix, bound = x[i].double().numpy(), A[i].double().numpy(), b[i].double().numpy()
        reference = clarabel_projection(point, matrix, bound, 0, 1)
        if reference is None:
            continue
        solved += 1
        ours = projected[i].double().numpy()
        assert ours.min() >= 0 and ours.max() <= 1
        assert (matrix @ ours >= bound - feasibility * (1 + np.abs(bound))).all()  # feasible
        ours_sq, best_sq = ((ours - point) ** 2).sum(), ((reference - point) ** 2).sum()
        assert abs(ours_sq - best_sq) <= 1e-4 * best_sq + 1e-7  # and optimal
    return solved


@pytest.mark.parametrize("k", [1, 2, 3])
def test_projection_onto_half_spaces_in_the_box_matches_clarabel(k):
    gen = torch.Generator().manual_seed(k)
    rows, m = 24, 30
    x = torch.rand(rows, m, generator=gen)
    A = torch.randn(rows, k, m, generator=gen)
    b = torch.einsum("bkm,bm->bk", A, x) + 2 * torch.rand(rows, k, generator=gen)  # x itself violates all
    projected = project_to_polyhedron(x, A, b, 0.0, 1.0)
    if k == 1:
        assert torch.allclose(project_to_halfspace(x, A[:, 0], b[:, 0], 0.0, 1.0), projected, atol=1e-5)
    solved = matches_clarabel(projected, x, A, b, feasibility=1e-4)
    assert solved > rows // 2


def test_success_margin_sign_agrees_with_the_predicted_class():
    logits = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    goal = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(1))
    for targeted in (True, False):
        assert torch.equal(success_margin(logits, goal, targeted) > 0, reached(logits, goal, targeted))


def test_the_search_runs_with_subnormals_flushed_and_restores_the_setting():
    from torch import nn

    from intriguing.attacks import LBFGS
    from intriguing.numerics import flushing as _flushing

    seen = []

    class Recording(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(6, 3)

        def forward(self, x):
            seen.append(_flushing())
            return self.layer(x)

    torch.manual_seed(0)
    model = Recording().eval()
    x = torch.rand(4, 6)
    for setting in (False, True):
        torch.set_flush_denormal(setting)
        seen.clear()
        LBFGS(refine=False, max_solves=3)(model, x, labels=torch.zeros(4, dtype=torch.int64))
        assert _flushing() == setting  # the caller's setting is back
        assert all(seen[1:-1])  # every evaluation of the search (not the checks around it) is flushed
    torch.set_flush_denormal(False)


def test_subnormal_weights_change_nothing_and_cost_nothing():
    from torch import nn

    from intriguing.attacks import LBFGS

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 8), nn.Sigmoid(), nn.Linear(8, 4)).eval()
    zeroed = nn.Sequential(nn.Linear(20, 8), nn.Sigmoid(), nn.Linear(8, 4)).eval()
    zeroed.load_state_dict(model.state_dict())
    with torch.no_grad():
        model[0].weight[:, :5] = 1e-40  # subnormal in float32, as weight decay leaves MNIST's border weights
        zeroed[0].weight[:, :5] = 0.0
    x = torch.rand(6, 20, generator=torch.Generator().manual_seed(2))
    x[:, :5] = 0.0
    labels = zeroed(x).argmax(1)
    ours, reference = (LBFGS(refine=False)(net, x, labels=labels) for net in (model, zeroed))
    assert torch.equal(ours.adversarial, reference.adversarial)
