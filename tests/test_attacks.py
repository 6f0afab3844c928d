"""The L-BFGS attack: verified successes, the box, exact answers on hand-weighted models, bad input.

Tiny hand-made models only (a few inputs, a few classes), so every test runs in well under a second.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from intriguing.attacks import (LBFGS, Attack, AttackResult, LBFGSConfig, Targeted, Untargeted, exact_linear,
                                rms_distortion)
from intriguing.attacks.base import Found, make_task, verified_result
from intriguing.errors import IntriguingError
from intriguing.records import to_jsonable
from intriguing.seeding import random_targets


def tiny_mlp(seed: int, inputs: int = 6, hidden: int = 8, classes: int = 4, scale: float = 3.0) -> nn.Module:
    """A random sigmoid network; ``scale`` makes its weights large enough for every class to win somewhere."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.Sigmoid(), nn.Linear(hidden, classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


def linear(weight, bias) -> nn.Module:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return nn.Sequential(nn.Flatten(), layer).eval()


def inputs(seed: int, n: int, m: int = 6) -> torch.Tensor:
    return torch.rand(n, m, generator=torch.Generator().manual_seed(seed))


def check_verified(model: nn.Module, x: torch.Tensor, result: AttackResult, goal: torch.Tensor, targeted: bool,
                   bounds=(0.0, 1.0)) -> None:
    """Every reported success is real, everything stays in the box, failures are reported as such."""
    low, high = bounds
    adv = result.adversarial
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= low and float(adv.max()) <= high
    with torch.no_grad():
        predicted = model(adv).argmax(1)
    ok = result.success
    reached = predicted == goal if targeted else predicted != goal
    assert bool(reached[ok].all())
    assert torch.equal(adv[~ok], x[~ok])
    assert bool(result.distortion[~ok].isnan().all()) and bool(result.distortion_paper[~ok].isnan().all())
    assert torch.allclose(result.distortion[ok], rms_distortion(x, adv)[ok])
    # Refinement never makes a result worse than the paper-faithful one.
    assert bool((result.distortion[ok] <= result.distortion_paper[ok] * (1 + 1e-5)).all())
    assert result.evaluations.dtype == torch.int64 and bool((result.evaluations >= 1).all())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), targeted=st.booleans())
def test_successes_are_verified_and_the_box_is_never_left(seed, n, targeted):
    model = tiny_mlp(seed)
    x = inputs(seed, n)
    goal = random_targets(model(x).argmax(1), 4, seed) if targeted else model(x).argmax(1)
    kwargs = {"target": goal} if targeted else {"labels": goal}
    result = LBFGS(max_solves=12)(model, x, **kwargs)
    check_verified(model, x, result, goal, targeted)
    if targeted:
        assert torch.equal(result.target, goal)
    else:
        assert bool((result.target[result.success] != goal[result.success]).all())


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_other_bounds_are_respected_exactly(seed):
    bounds = (-0.5, 2.0)  # e.g. the activations of a hidden layer
    model = tiny_mlp(seed, scale=1.0)
    x = bounds[0] + (bounds[1] - bounds[0]) * inputs(seed, 5)
    labels = model(x).argmax(1)
    result = LBFGS(bounds=bounds, max_solves=12)(model, x, labels=labels)
    check_verified(model, x, result, labels, targeted=False, bounds=bounds)


def test_hand_weighted_2d_model_meets_the_closed_form():
    # Class 1 wins where 2 x0 + x1 > 2.5. From (0.9, 0.2) the free projection (1.1, 0.3) leaves the
    # box; with x0 <= 1 the closest point is (1.0, 0.5) (KKT multipliers 0.6 and 1.0, both >= 0).
    model = linear([[0.0, 0.0], [2.0, 1.0]], [0.0, -2.5])
    x = torch.tensor([[0.9, 0.2], [0.2, 0.1]])
    # Second row: class 1 wins where x1 > x0 with logits (x0, x1); closest point (0.15, 0.15).
    model2 = linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    target = torch.tensor([1, 1])
    expected = torch.tensor([[1.0, 0.5], [0.15, 0.15]])
    for net, row in ((model, 0), (model2, 1)):
        for result in (LBFGS()(net, x[row : row + 1], target=target[:1]), exact_linear(net, x[row : row + 1], target[:1])):
            assert bool(result.success.all())
            assert torch.allclose(result.adversarial[0], expected[row], atol=2e-3)
            want = rms_distortion(x[row : row + 1], expected[row : row + 1])
            assert torch.allclose(result.distortion, want, rtol=5e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untargeted_is_at_most_every_targeted_distortion(seed):
    # Each untargeted row runs the targeted attack towards its class and records more successes,
    # so this holds by construction, up to float rounding (which a batched matrix product varies
    # with a row's position; very saturated toy nets can amplify it into another local minimum).
    model = tiny_mlp(seed, classes=4, scale=2.0)
    x = inputs(seed, 6)
    labels = model(x).argmax(1)
    attack = LBFGS()
    untargeted = attack(model, x, labels=labels)
    assert bool(untargeted.success.all())
    for shift in (1, 2, 3):
        targeted = attack(model, x, target=(labels + shift) % 4)
        ok = targeted.success
        assert bool((untargeted.distortion[ok] <= targeted.distortion[ok] * (1 + 1e-4)).all())


def test_matches_the_exact_qp_on_a_linear_model():
    gen = torch.Generator().manual_seed(0)
    model = linear((torch.randn(5, 12, generator=gen) * 2).tolist(), torch.randn(5, generator=gen).tolist())
    x = inputs(1, 40, 12)
    target = random_targets(model(x).argmax(1), 5, seed=1)
    ours, exact = LBFGS()(model, x, target=target), exact_linear(model, x, target)
    both = ours.success & exact.success
    assert bool((ours.success == exact.success).all()) and int(both.sum()) > 20
    ratio = ours.distortion[both] / exact.distortion[both]
    assert float(ratio.median()) <= 1.01 and float(ratio.max()) <= 1.1 and float(ratio.min()) >= 0.999


def test_already_adversarial_inputs_cost_one_evaluation_and_no_distortion():
    model = tiny_mlp(5)
    x = inputs(5, 4)
    predicted = model(x).argmax(1)
    with pytest.warns(UserWarning, match="already the model's class"):  # maybe labels passed as targets
        result = LBFGS()(model, x, target=predicted)
    assert bool(result.success.all()) and bool((result.distortion == 0).all())
    assert bool((result.evaluations == 1).all())


def test_an_unreachable_target_is_a_failure():
    model = linear([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [0.0, 0.0, -10.0])  # class 2 never wins in the box
    x = torch.tensor([[0.7, 0.2], [0.3, 0.6]])
    result = LBFGS()(model, x, target=torch.tensor([2, 0]))
    assert result.success.tolist() == [False, True]
    assert torch.equal(result.adversarial[0], x[0]) and math.isnan(float(result.distortion[0]))
    assert result.success_rate == 0.5


def test_same_input_same_numbers_and_streaming_does_not_change_results():
    model = tiny_mlp(7, scale=2.0)
    x = inputs(7, 12)
    target = random_targets(model(x).argmax(1), 4, seed=0)
    first = LBFGS()(model, x, target=target)
    again = LBFGS()(model, x, target=target)
    assert torch.equal(first.adversarial, again.adversarial) and torch.equal(first.evaluations, again.evaluations)
    streamed = LBFGS(batch_size=3)(model, x, target=target)  # 3 slots serve 12 rows in turn
    assert torch.equal(streamed.success, first.success)
    assert torch.allclose(streamed.distortion, first.distortion, rtol=1e-4, equal_nan=True)


def test_leaves_the_model_alone():
    model = tiny_mlp(8).train()
    x = inputs(8, 3)
    with pytest.warns(UserWarning, match="train mode"):
        LBFGS()(model, x, labels=model(x).argmax(1))
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LBFGS()(model, x, labels=model(x).argmax(1))


def test_config_and_result_records():
    model = tiny_mlp(9)
    x = inputs(9, 3)
    result = LBFGS(c_rtol=0.05, refine=False)(model, x, labels=model(x).argmax(1))
    assert result.config["c_rtol"] == 0.05 and result.config["refine"] is False
    assert result.config["bounds"] == [0.0, 1.0]
    assert torch.equal(result.distortion, result.distortion_paper) or bool(
        torch.isnan(result.distortion).eq(torch.isnan(result.distortion_paper)).all())
    summary = result.summary()
    assert summary["n"] == 3 and 0.0 <= summary["success_rate"] <= 1.0
    assert set(result.per_example()) == {"success", "distortion", "distortion_paper", "target", "c", "evaluations"}


def test_verification_reports_every_bad_candidate_as_a_failure():
    class NaNAbove(nn.Module):  # logits (x0, x1), but NaN where x1 > 0.9
        def forward(self, x):
            logits = x.flatten(1)[:, :2].clone()
            return torch.where(logits[:, 1:2] > 0.9, math.nan, logits)

    model = NaNAbove().eval()
    x = torch.tensor([[0.6, 0.2]]).repeat(5, 1)
    task = make_task(model, x, Targeted(torch.ones(5, dtype=torch.int64)), (0.0, 1.0))
    candidates = torch.tensor([[0.3, 0.4], [0.6, 0.5], [0.3, 1.2], [math.nan, 0.7], [0.3, 0.95]])
    found = Found(candidates, distortion_paper=torch.zeros(5), c=torch.ones(5),
                  evaluations=torch.ones(5, dtype=torch.int64))
    result = verified_result(model, task, found, config={})
    # Only the first is classified as class 1, inside the box, with finite input and logits.
    assert result.success.tolist() == [True, False, False, False, False]
    assert torch.equal(result.adversarial[1:], x[1:]) and bool(result.distortion[1:].isnan().all())


def test_rms_distortion_is_the_papers_measure():
    x = torch.zeros(2, 1, 2, 2)
    adv = x.clone()
    adv[0, 0, 0, 0] = 0.4  # sqrt(0.16 / 4) = 0.2
    assert torch.allclose(rms_distortion(x, adv), torch.tensor([0.2, 0.0]))


def nan_model() -> nn.Module:
    class NaNLogits(nn.Module):
        def forward(self, x):
            return torch.full((len(x), 3), math.nan)

    return NaNLogits().eval()


def flat_model() -> nn.Module:
    class Flat(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1)  # (N,), not (N, classes)

    return Flat().eval()


@pytest.mark.parametrize("make_call, names", [
    (lambda m, x: LBFGS()(m, x * 2, target=torch.zeros(3, dtype=torch.int64)), "x"),
    (lambda m, x: LBFGS()(m, x, target=torch.tensor([0, 1, 7])), "target"),
    (lambda m, x: LBFGS()(m, x, target=torch.zeros(2, dtype=torch.int64)), "target"),
    (lambda m, x: LBFGS()(m, x, labels=torch.zeros(4, dtype=torch.int64)), "labels"),
    (lambda m, x: LBFGS()(m, x, target=torch.zeros(3)), "target"),
    (lambda m, x: LBFGS()(m, x), "target/labels"),
    (lambda m, x: LBFGS()(m, x, target=torch.zeros(3, dtype=torch.int64), labels=torch.zeros(3, dtype=torch.int64)),
     "target/labels"),
    (lambda m, x: LBFGS()(nan_model(), x, labels=torch.zeros(3, dtype=torch.int64)), "model"),
    (lambda m, x: LBFGS()(flat_model(), x, labels=torch.zeros(3, dtype=torch.int64)), "model"),
    (lambda m, x: LBFGS()(m, x.double().numpy(), labels=torch.zeros(3, dtype=torch.int64)), "x"),
    (lambda m, x: LBFGS(bounds=(1.0, 0.0)), "bounds"),
    (lambda m, x: LBFGS(c_rtol=-1), "c_rtol"),
    (lambda m, x: LBFGS(batch_size=0), "batch_size"),
    (lambda m, x: exact_linear(tiny_mlp(0), x, torch.zeros(3, dtype=torch.int64)), "model"),
])
def test_bad_input_raises_one_clear_error_naming_the_argument(make_call, names):
    model = tiny_mlp(1)
    x = inputs(1, 3)
    with pytest.raises(ValueError) as error:
        make_call(model, x)
    assert isinstance(error.value, IntriguingError)
    assert str(error.value).startswith(f"{names}:")


def test_named_configs_are_the_papers_the_pools_and_the_refined_attack():
    paper_search = {"c_rtol": 0.01, "max_iter": 100, "stall_window": 10, "max_solves": 30}  # refined: shorter
    off = {"refine": False, "stall_rtol": 0.0, "shrink_steps": 0, "outside_in": False, "scale_aware": False}
    assert LBFGSConfig.paper() == LBFGSConfig(**off, **paper_search)
    assert LBFGSConfig.pool() == LBFGSConfig(**off, **{**paper_search, "c_rtol": 0.1, "max_solves": 8})
    assert LBFGSConfig.refined() == LBFGSConfig()
    variant = dataclasses.replace(LBFGSConfig.paper(), max_solves=10, max_iter=50)
    assert (variant.refine, variant.max_solves, variant.max_iter) == (False, 10, 50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        variant.max_solves = 3
    # Recorded as before: the method, the solver's settings, refine_steps 0 when refine is off.
    assert LBFGSConfig.paper().to_dict() == {
        "method": "LBFGS", "bounds": [0.0, 1.0], "initial_c": None, "c_factor": 10.0, "c_rtol": 0.01,
        "max_solves": 30, "memory": 10, "max_iter": 100, "ftol": 1e-5, "pgtol": 1e-5, "stall_window": 10,
        "stall_rtol": 0.0, "shrink_steps": 0, "outside_in": False, "scale_aware": False, "batch_size": 512,
        "refine": False, "refine_steps": 0}
    assert json.loads(json.dumps(to_jsonable(LBFGSConfig.pool())))["max_solves"] == 8
    assert LBFGS(LBFGSConfig.paper(), max_solves=10).config == LBFGSConfig(**off, **{**paper_search, "max_solves": 10})
    assert LBFGS(**off, **paper_search).config == LBFGSConfig.paper()


@pytest.mark.parametrize("make, name", [
    (lambda: LBFGSConfig(c_factor=1.0), "c_factor"),
    (lambda: LBFGSConfig(initial_c=0), "initial_c"),
    (lambda: LBFGSConfig(max_iter=2.5), "max_iter"),
    (lambda: LBFGSConfig(refine="no"), "refine"),
    (lambda: LBFGSConfig(outside_in=1), "outside_in"),
    (lambda: LBFGSConfig(scale_aware=None), "scale_aware"),
    (lambda: LBFGSConfig(refine_steps=-1), "refine_steps"),
    (lambda: LBFGSConfig(stall_rtol=-1e-3), "stall_rtol"),
    (lambda: LBFGSConfig(stall_window=0), "stall_window"),
    (lambda: LBFGSConfig(shrink_steps=-1), "shrink_steps"),
    (lambda: LBFGSConfig(bounds=(0.0,)), "bounds"),
    (lambda: LBFGSConfig.paper(max_solve=3), "max_solve"),
    (lambda: LBFGS(memroy=3), "memroy"),
    (lambda: LBFGS({"refine": False}), "config"),
])
def test_bad_configs_raise_one_clear_error_naming_the_field(make, name):
    with pytest.raises(IntriguingError) as error:
        make()
    assert str(error.value).startswith(f"{name}:")


def test_criterion_objects_equal_the_keyword_shorthand():
    model = tiny_mlp(11, scale=2.0)
    x = inputs(11, 5)
    labels = model(x).argmax(1)
    target = random_targets(labels, 4, seed=2)
    attack = LBFGS(LBFGSConfig.paper())
    for by_object, by_keyword in ((attack(model, x, Targeted(target)), attack(model, x, target=target)),
                                  (attack(model, x, Untargeted(labels)), attack(model, x, labels=labels))):
        assert torch.equal(by_object.adversarial, by_keyword.adversarial)
        assert torch.equal(by_object.evaluations, by_keyword.evaluations)
    checked = attack(model, x, Targeted(target, labels=labels))  # labels only check the targets
    assert torch.equal(checked.adversarial, attack(model, x, target=target).adversarial)


def test_any_search_gets_the_checks_and_the_verification():
    class TowardsZero(Attack):
        """A toy attack: its only candidate is the box corner 0."""

        def record(self):
            return {"method": "corner"}

        def _search(self, model, task):
            from intriguing.attacks.base import Found
            n = len(task.x)
            return Found(torch.zeros_like(task.x), torch.zeros(n), torch.full((n,), math.nan),
                         torch.ones(n, dtype=torch.int64))

    model = linear([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [0.0, 0.0, 0.5])  # class 2 wins at the corner 0
    x = torch.tensor([[0.7, 0.2], [0.3, 0.6]])
    result = TowardsZero()(model, x, Targeted(torch.tensor([2, 0])))
    assert result.success.tolist() == [True, False] and result.config == {"method": "corner"}
    assert torch.equal(result.adversarial[1], x[1])
    with pytest.raises(IntriguingError, match="^x:"):
        TowardsZero()(model, x * 3, labels=torch.tensor([0, 1]))


def random_conv_net(channels: int, size: int, seed: int = 0) -> nn.Module:
    """Two stride-2 ReLU convolutions and a linear layer, PyTorch's default (random) initialisation."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(channels, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * (size // 4) ** 2, 10)).eval()


def test_large_inputs_cost_about_as_many_evaluations_as_mnist_sized_ones():
    """Section 4.1's search on a 3x64x64 ReLU conv net needs about the evaluations of a 1x28x28 one
    (16x the pixels): the solves must not crawl on the piecewise-linear loss (``stall_rtol``)."""
    counts = {}
    for channels, size in ((1, 28), (3, 64)):
        model = random_conv_net(channels, size)
        x = torch.rand(16, channels, size, size, generator=torch.Generator().manual_seed(1))
        target = random_targets(model(x).argmax(1), 10, 0)
        result = LBFGS()(model, x, target=target)
        check_verified(model, x, result, target, targeted=True)
        assert result.success_rate == 1.0
        counts[size] = float(result.evaluations.double().mean())
    assert counts[64] <= 2.5 * counts[28] and counts[64] <= 150, counts
