"""The exact minimal distortion (oracles.mip / oracles.branch) and the certified bracket around it.

Oracles: brute force on 1-D and 2-D toy networks; the two solvers (own branch and bound, SCIP) agree;
on a tiny MNIST ReLU net, and (slow) on the zoo's FC20-20-10(ReLU) of the benchmark and the report,
certified lower <= exact <= the L-BFGS attack's distortion.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from intriguing import zoo
from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.chains import chain_of, flat_inputs
from intriguing.data import load_mnist
from intriguing.errors import IntriguingError
from intriguing.oracles import certified_lower_bound, exact_minimal_distortion
from intriguing.oracles.branch import _Incumbent, _polish, _Relaxation
from intriguing.oracles.compare import compare_with_attack
from intriguing.oracles.propagation import Domain, layer_bounds
from intriguing.seeding import random_targets

pytest.importorskip("pyscipopt")


def _toy(inputs: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


def _brute_force(model: nn.Module, x0: torch.Tensor, grid: torch.Tensor, target: int) -> float:
    """The smallest distance from ``x0`` to a grid point classified as ``target`` (inf if none)."""
    with torch.no_grad():
        logits = model(grid.float()).double()
    wins = logits[:, target] >= logits.max(1).values
    return float((grid[wins] - x0).norm(dim=1).min()) if wins.any() else math.inf


def _toys(inputs: int, x0: torch.Tensor, grid: torch.Tensor, count: int):
    """The first ``count`` seeded toys with a class other than ``x0``'s somewhere on the grid, and that class."""
    found = []
    for seed in range(50):
        model = _toy(inputs, seed)
        with torch.no_grad():
            classes = model(grid.float()).argmax(1).unique().tolist()
            label = int(model(x0[None].float()).argmax())
        others = [c for c in classes if c != label]
        if others:
            found.append((model, others[0]))
        if len(found) == count:
            return found
    raise AssertionError("no toy network with two classes on the grid")


@pytest.mark.parametrize("solver", ["bnb", "scip"])
def test_one_dimensional_toy_matches_brute_force(solver):
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None]
    x0 = torch.tensor([0.37], dtype=torch.float64)
    for model, target in _toys(1, x0, grid, 3):
        brute = _brute_force(model, x0, grid, target)
        [exact] = exact_minimal_distortion(model, x0[None].float(), torch.tensor([target]), solver=solver)
        assert exact.proven
        assert exact.l2 == pytest.approx(brute, abs=2e-5)
        assert exact.lower_l2 <= exact.l2 + 1e-9


def test_a_start_the_target_does_not_win_leaves_the_whole_box_to_search():
    """A failed attack hands back the clean input: it bounds nothing, so it must not shrink the ball to 0
    (which once reported 'infeasible' for a reachable target)."""
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None]
    x0 = torch.tensor([0.37], dtype=torch.float64)
    [(model, target)] = _toys(1, x0, grid, 1)
    [exact] = exact_minimal_distortion(model, x0[None].float(), torch.tensor([target]), start=x0[None].float())
    assert exact.proven and exact.l2 == pytest.approx(_brute_force(model, x0, grid, target), abs=2e-5)


@pytest.mark.parametrize("solver", ["bnb", "scip"])
def test_two_dimensional_toy_matches_brute_force(solver):
    axis = torch.linspace(0, 1, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    x0 = torch.tensor([0.5, 0.5], dtype=torch.float64)
    [(model, target)] = _toys(2, x0, grid, 1)
    brute = _brute_force(model, x0, grid, target)
    [exact] = exact_minimal_distortion(model, x0[None].float(), torch.tensor([target]), solver=solver)
    assert exact.proven and exact.margin >= -1e-6
    assert brute - 1e-3 <= exact.l2 <= brute + 1e-9  # the grid's nearest point is within half a diagonal step
    assert exact.rms == pytest.approx(exact.l2 / math.sqrt(2))


@pytest.fixture(scope="module")
def mnist_relu():
    """A tiny ReLU MLP on 14x14 MNIST (196-12-12-10): trains in about a second."""
    images, labels = load_mnist("train")
    x, y = images[:2000, :, ::2, ::2].flatten(1), labels[:2000]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(196, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 10))
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(3):
        for i in range(0, len(x), 64):
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    test_images, test_labels = load_mnist("test")
    xt, yt = test_images[:40, :, ::2, ::2].flatten(1), test_labels[:40]
    model.eval()
    with torch.no_grad():
        correct = (model(xt).argmax(1) == yt).nonzero().squeeze(1)[:3]
    return model, xt[correct], random_targets(yt[correct], 10, seed=0)


def test_certified_lower_exact_and_attack_are_ordered(mnist_relu):
    model, x, target = mnist_relu
    found = LBFGS()(model, x, target=target)
    assert found.success.all()
    lower = certified_lower_bound(model, x, target, upper=found.distortion)
    exact = exact_minimal_distortion(model, x, target, start=found.adversarial, time_limit=60)
    for i, e in enumerate(exact):
        assert e.proven and e.gap <= 1e-4
        assert float(lower[i]) <= e.lower_rms + 1e-9
        assert e.lower_rms <= e.rms <= float(found.distortion[i]) + 1e-6
        assert ((e.adversarial >= 0) & (e.adversarial <= 1)).all()
        assert e.margin >= -1e-6
        assert float(lower[i]) > 0


@pytest.mark.slow
def test_zoo_relu_net_is_solved_exactly_inside_its_certified_bracket():
    """The benchmark's net and examples (first correct test images, seeded random targets), three fast ones: each
    problem proven to gap 1e-4 and certified <= exact <= found (training the net here takes about a minute)."""
    model = zoo.trained("FC20-20-10(ReLU)", progress=False).model
    images, labels = load_mnist("test")
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).nonzero().squeeze(1)[:20]
    target = random_targets(labels[correct], 10, seed=0)
    pick = torch.tensor([1, 17, 19])
    out = compare_with_attack(model, images[correct][pick], target[pick], time_limit=120)
    assert out["summary"]["solved"] == 3 and out["summary"]["ordered"]
    for row in out["rows"]:
        assert 0 < row["certified"] <= row["exact"] + 1e-9  # both bracket the true minimum, proven to 1e-4
        assert row["exact_lower"] <= row["exact"] <= min(row["refined"], row["paper"]) + 1e-6


def test_exact_point_with_a_margin_is_classified_as_the_target(mnist_relu):
    model, x, target = mnist_relu
    [e] = exact_minimal_distortion(model, x[:1], target[:1], margin=1e-3,
                                   start=LBFGS()(model, x[:1], target=target[:1]).adversarial)
    point = e.adversarial.float()[None]
    with torch.no_grad():
        assert int(model(point).argmax()) == int(target[0])
    assert e.to_dict()["proven"] and "adversarial" not in e.to_dict()


def test_the_incumbent_polish_keeps_only_verified_points_and_nears_the_optimum(mnist_relu):
    """The exact solver polishes its first incumbent with the attack's region search: from the paper-faithful
    attack's point it ends on a point of the box where the target wins by the margin in float64 through the
    chain (the guarantee the tree relies on), closer than the start and near the proven optimum."""
    model, x, target = mnist_relu
    margin = 1e-3
    paper = LBFGS(LBFGSConfig.paper())(model, x, target=target).adversarial
    exact = exact_minimal_distortion(model, x, target, margin=margin, start=paper, time_limit=60)
    chain = chain_of(model, allowed=("relu",))
    x0s, starts = flat_inputs(chain, x), flat_inputs(chain, paper)
    for x0, start, goal, e in zip(x0s, starts, target.tolist(), exact):
        domain = Domain.l2(x0, float((start - x0).norm()) * 2)
        incumbent = _Incumbent(chain, _Relaxation(chain, domain, layer_bounds(chain, domain), goal, margin), goal,
                               margin)
        incumbent.offer(start.numpy())
        start_sq = incumbent.sq
        _polish(incumbent, start, math.inf)
        point = torch.from_numpy(incumbent.point)
        logits = chain.logits(point[None])[0]
        assert float(logits[goal] - torch.cat([logits[:goal], logits[goal + 1:]]).max()) >= margin
        assert bool(((point >= 0) & (point <= 1)).all())
        assert incumbent.sq < start_sq and e.proven  # it moved: the paper's points are not optimal here
        assert math.sqrt(incumbent.sq) <= e.l2 * 1.001, (math.sqrt(incumbent.sq), e.l2, math.sqrt(start_sq))


def test_already_the_target_costs_nothing_and_bad_input_is_refused(mnist_relu):
    model, x, _ = mnist_relu
    with torch.no_grad():
        label = model(x[:1]).argmax(1)
    [e] = exact_minimal_distortion(model, x[:1], label)
    assert e.status == "already" and e.l2 == 0.0
    assert float(certified_lower_bound(model, x[:1], label)[0]) == 0.0
    with pytest.raises(IntriguingError, match="Sigmoid"):
        exact_minimal_distortion(nn.Sequential(nn.Linear(196, 4), nn.Sigmoid(), nn.Linear(4, 10)), x[:1], label)
    with pytest.raises(IntriguingError, match="values must lie"):
        exact_minimal_distortion(model, x[:1] + 2, label)
    with pytest.raises(IntriguingError, match="solver"):
        exact_minimal_distortion(model, x[:1], (label + 1) % 10, solver="gurobi")


def test_a_caller_that_flushes_subnormals_still_gets_the_exact_answer():
    """The CLI and workers flush subnormal floats; the oracle keeps them, or a bound flushed to zero makes a
    feasible toy problem look infeasible (a bug found when the suite ran after a CLI test)."""
    from intriguing import numerics

    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None]
    x0 = torch.tensor([0.37], dtype=torch.float64)
    before = numerics.flushing()
    torch.set_flush_denormal(True)
    try:
        for model, target in _toys(1, x0, grid, 3):
            [exact] = exact_minimal_distortion(model, x0[None].float(), torch.tensor([target]), solver="bnb")
            assert exact.proven and exact.l2 == pytest.approx(_brute_force(model, x0, grid, target), abs=2e-5)
        assert numerics.flushing()  # the caller's setting is restored
    finally:
        torch.set_flush_denormal(before)


@pytest.mark.parametrize("solver", ["bnb", "scip"])
def test_a_network_without_hidden_layers_is_the_linear_qp(solver):
    """A bug: softmax regression (no ReLU) crashed the branch and bound with 'blocks must be 2-D'.
    Its exact problem is the QP that :func:`~intriguing.attacks.exact_linear` solves."""
    from intriguing.attacks import exact_linear

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    x = torch.rand(3, 12)
    with torch.no_grad():
        target = (model(x).argmax(1) + 1) % 4
    found = exact_linear(model, x, target)  # its margin of 1e-4 logits moves the distance by ~1e-5 here
    attacked = LBFGS()(model, x, target=target)
    for start in (None, attacked.adversarial):  # with a start (as `intriguing exact` runs it), the proof came first
        exact = exact_minimal_distortion(model, x, target, solver=solver, start=start)
        assert all(e.status == "optimal" for e in exact)
        rms = torch.tensor([e.rms for e in exact], dtype=torch.float64)
        assert torch.allclose(rms, found.distortion.double(), rtol=1e-3)
