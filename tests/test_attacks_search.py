"""The ``c`` search's start and warm starts (Section 4.1): the scale-aware first ``c`` and the outside-in
search's restart from the adversarial end of the bracket. Tiny models, so every test runs in about a second."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.attacks import solver as solver_module
from intriguing.attacks.c_search import MNIST_SIZE
from intriguing.attacks.solver import CSearch, _Slots
from intriguing.seeding import random_targets


@pytest.mark.parametrize("m", [6, MNIST_SIZE, 3 * 32 * 32])
def test_the_first_c_is_lowered_by_the_root_of_the_size_ratio_only_above_mnist(m):
    gen = torch.Generator().manual_seed(m)
    loss, grad = 2.0 + torch.rand(5, generator=gen), torch.randn(5, m, generator=gen)
    firsts = {}
    for aware in (False, True):
        search = CSearch(None, LBFGSConfig.refined(scale_aware=aware))
        search.slots = _Slots(5, m, 2, grad)
        search.slots.z = torch.full((5, m), 0.5)  # inside the box: every coordinate free
        firsts[aware] = search._initial_c(loss, grad)
    expected = firsts[False] * (math.sqrt(MNIST_SIZE / m) if m > MNIST_SIZE else 1.0)
    assert torch.allclose(firsts[True], expected, rtol=1e-6)
    assert torch.equal(firsts[True], firsts[False]) == (m <= MNIST_SIZE)  # MNIST and smaller: bitwise unchanged
    fixed = CSearch(None, LBFGSConfig.refined(initial_c=3.0))
    fixed.slots = search.slots
    assert torch.equal(fixed._initial_c(loss, grad), torch.full((5,), 3.0))  # a fixed initial_c is never scaled


def sigmoid_net(seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Sigmoid(), nn.Linear(16, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(3.0 * torch.randn(p.shape, generator=gen))
    return model.eval()


def test_every_solve_starts_from_its_point_with_the_objective_at_its_c(monkeypatch):
    """Solves cut short (``max_iter=2``) fail after adversarial ones; outside-in, the next solve starts
    from the adversarial minimiser, and every solve, restarted or warm-started, starts with the value and
    gradient of ``c |z - x|^2 + loss`` at its own point and ``c`` (closed-form updates, no model call)."""
    restarted, checked = [], []
    change_c, restart = CSearch._change_c, CSearch._restart

    def checked_change(self, moving, new_c):
        change_c(self, moving, new_c)
        s = self.slots
        f, g, *_ = self.objective(s.z, s.x, s.goal, s.true, s.c)
        assert torch.allclose(s.f[moving], f[moving], rtol=1e-5, atol=1e-5)
        assert torch.allclose(s.g[moving], g[moving], rtol=1e-4, atol=1e-5)
        checked.append(int(moving.sum()))

    def recorded_restart(self, rows):
        restart(self, rows)
        assert torch.equal(self.slots.z[rows], self.slots.z_adv[rows])
        restarted.append(int(rows.sum()))

    monkeypatch.setattr(solver_module.CSearch, "_change_c", checked_change)
    monkeypatch.setattr(solver_module.CSearch, "_restart", recorded_restart)
    model = sigmoid_net(0)
    x = torch.rand(24, 12, generator=torch.Generator().manual_seed(1))
    target = random_targets(model(x).argmax(1), 5, seed=2)
    result = LBFGS(max_iter=2, refine=False, shrink_steps=0)(model, x, target=target)
    assert sum(restarted) > 0 and sum(checked) > sum(restarted)
    assert result.success_rate > 0.5


def test_the_outside_in_search_ends_no_farther_than_the_papers_on_solves_cut_short():
    """With solves cut short, a failed solve drifts away from the target's region; restarting from the
    adversarial minimiser keeps the search near it, so it ends no farther from ``x`` (median over rows)."""
    model = sigmoid_net(3)
    x = torch.rand(40, 12, generator=torch.Generator().manual_seed(4))
    target = random_targets(model(x).argmax(1), 5, seed=5)
    plain, restarted = (LBFGS(max_iter=3, refine=False, shrink_steps=0, outside_in=flag)(model, x, target=target)
                        for flag in (False, True))
    both = plain.success & restarted.success
    assert restarted.success_rate >= plain.success_rate and int(both.sum()) >= 20
    assert float(restarted.distortion[both].median()) <= float(plain.distortion[both].median()) * 1.001


def test_only_a_solve_started_adversarial_is_ended_when_its_margin_is_lost():
    margin = torch.tensor([-2.0, -2.0, -0.5, 3.0, -2.0])
    started = torch.tensor([True, False, True, True, True])
    accepted = torch.tensor([True, True, True, True, False])
    for outside_in in (True, False):
        search = CSearch(None, LBFGSConfig.refined(outside_in=outside_in))
        search.slots = _Slots(5, 3, 2, margin)
        search.slots.start_adv = started
        lost = search._lost(accepted, margin)
        assert lost.tolist() == ([True, False, False, False, False] if outside_in else [False] * 5)
    assert solver_module.LOST_MARGIN == 1.0


def test_the_first_c_of_the_rows_being_started_is_bitwise_the_one_computed_over_every_slot():
    """The search starts new rows alone (issue 14: no pass over the busy slots); a row's first ``c``
    must not depend on which other rows are computed with it, coordinates at the box's bounds included."""
    gen = torch.Generator().manual_seed(7)
    rows, m = 6, MNIST_SIZE
    z = torch.rand(rows, m, generator=gen)
    z[:, ::3], z[:, 1::5] = 0.0, 1.0  # held at a bound where the gradient points out of the box
    loss, grad = 2.0 + torch.rand(rows, generator=gen), torch.randn(rows, m, generator=gen)
    search = CSearch(None, LBFGSConfig.refined())
    search.slots = _Slots(rows, m, 2, grad)
    search.slots.z = z
    every = search._initial_c(loss, grad)
    for started in ([4], [1, 3, 5]):
        index = torch.tensor(started)
        assert torch.equal(search._initial_c(loss[index], grad[index], z[index]), every[index])
