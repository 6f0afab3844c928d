"""Bound propagation (oracles.propagation): sound on samples, exact where it should be, and the chain parser."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

from intriguing.errors import IntriguingError
from intriguing.oracles import Domain, chain_of, layer_bounds
from intriguing.oracles.propagation import margin_lower_bounds


def _net(activation: type[nn.Module], sizes=(6, 8, 7, 3)) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _samples(domain: Domain, n: int = 20000) -> torch.Tensor:
    """Points of the domain: uniform in the box, pulled into the L2 ball, plus the box's corners direction."""
    g = torch.Generator().manual_seed(1)
    pts = domain.low + (domain.high - domain.low) * torch.rand(n, len(domain.x0), generator=g, dtype=torch.float64)
    if not math.isinf(domain.radius):
        d = pts - domain.x0
        pts = domain.x0 + d * (domain.radius / d.norm(dim=1, keepdim=True)).clamp(max=1)
    return pts


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Sigmoid])
@pytest.mark.parametrize("ball", ["linf", "l2"])
@pytest.mark.parametrize("method", ["interval", "linear"])
def test_bounds_contain_every_sampled_pre_activation(activation, ball, method):
    chain = chain_of(_net(activation))
    x0 = torch.rand(6, dtype=torch.float64)
    domain = Domain.linf(x0, 0.3) if ball == "linf" else Domain.l2(x0, 0.6)
    bounds = layer_bounds(chain, domain, method)
    pre = chain.pre_activations(_samples(domain))
    for (lo, hi), z in zip(bounds, pre):
        assert (z >= lo - 1e-9).all() and (z <= hi + 1e-9).all()
    margins = margin_lower_bounds(chain, 0, bounds, domain)
    logits = pre[-1]
    assert (logits - logits[:, :1]).min(0).values[1:].ge(margins[1:] - 1e-9).all()
    assert margins[0] == -math.inf


def test_linear_bounds_are_never_looser_than_interval_bounds():
    chain = chain_of(_net(nn.ReLU, (6, 10, 10, 3)))
    domain = Domain.l2(torch.rand(6, dtype=torch.float64), 0.5)
    for (li, ui), (lc, uc) in zip(layer_bounds(chain, domain, "interval"), layer_bounds(chain, domain, "linear")):
        assert (lc >= li - 1e-12).all() and (uc <= ui + 1e-12).all()


@pytest.mark.parametrize("radius", [0.05, 1.2, 100.0])
def test_l2_domain_minimum_matches_a_convex_solver(radius):
    """The Lagrangian dual (its multiplier found by sorting) is the exact minimum of a linear function over box and
    ball (oracle: cvxpy), also for a zero row, pixels on the box's faces and a ball holding the whole box."""
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(30, generator=g) > 0.6).double()
    domain = Domain.l2(x0, radius)
    a = torch.randn(5, 30, generator=g, dtype=torch.float64)
    a[1] = 0.0
    a[2, :10] = 0.0
    ours = domain.minimise(a, torch.zeros(5))
    for row, value in zip(a.numpy(), ours.tolist()):
        v = cp.Variable(30)
        problem = cp.Problem(cp.Minimize(row @ v), [v >= domain.low.numpy(), v <= domain.high.numpy(),
                                                    cp.norm(v - x0.numpy()) <= radius])
        problem.solve(solver="CLARABEL")
        assert value <= problem.value + 1e-7
        assert value == pytest.approx(problem.value, abs=1e-6)


def test_first_layer_bounds_are_exact_over_a_box():
    chain = chain_of(_net(nn.ReLU))
    domain = Domain.linf(torch.full((6,), 0.5, dtype=torch.float64), 0.5)  # the whole box [0, 1]^6
    lo, hi = layer_bounds(chain, domain)[0]
    w, b = chain.weights[0], chain.biases[0]
    assert torch.allclose(lo, w.clamp(max=0).sum(1) + b) and torch.allclose(hi, w.clamp(min=0).sum(1) + b)


def test_chain_of_composes_consecutive_linear_layers_and_refuses_others():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.Linear(5, 3), nn.ReLU(), nn.Dropout(0.1), nn.Linear(3, 2))
    chain = chain_of(net.eval())
    x = torch.rand(7, 4)
    assert len(chain.weights) == 2
    assert torch.allclose(chain.logits(x.double()), net(x).double(), atol=1e-6)
    for bad in (nn.Sequential(nn.Conv2d(1, 2, 3)), nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2), nn.Tanh()),
                nn.Sequential(nn.ReLU(), nn.Linear(3, 2))):
        with pytest.raises(IntriguingError, match="model:"):
            chain_of(bad)
    with pytest.raises(IntriguingError, match="Sigmoid") as refused:
        chain_of(nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(2, 2)), allowed=("relu",))
    # A bug: the message went on to ask for "ReLU/Sigmoid modules" right after refusing the Sigmoid.
    assert "need an nn.Sequential of Flatten, Linear and ReLU modules" in str(refused.value)
    assert np.isfinite(chain.weights[0].numpy()).all()


@pytest.mark.parametrize(("split", "warm"), [(False, False), (True, False), (True, True)])
def test_optimised_subdomain_bounds_are_below_every_sampled_point(split, warm):
    """verify.optimise bounds min_x max_j (logit_j - logit_t) from below, on the ball and inside a split, from the
    default parameters or from any valid start (a parent's)."""
    from intriguing.oracles.verify import _Params, domain_bounds, optimise

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    chain = chain_of(model)
    x0 = torch.rand(6, dtype=torch.float64)
    domain = Domain.l2(x0, 0.4)
    root = layer_bounds(chain, domain)
    phases = [torch.zeros(1, 8, dtype=torch.int64) for _ in range(2)]
    if split:
        phases[0][0, int(((root[0][0] < 0) & (root[0][1] > 0)).nonzero()[0])] = 1
    start = torch.full((1, _Params.width(3, [8, 8])), math.nan, dtype=torch.float64)
    if warm:  # class weights anywhere, slopes in [0, 1], multipliers >= 0
        start = torch.cat([torch.randn(1, 3), torch.rand(1, 16), torch.rand(1, 16) * 3], dim=1).double()
    bound, _, _ = optimise(chain, domain, domain_bounds(chain, domain, root, phases), phases, 2, start)
    direction = torch.randn(200_000, 6, dtype=torch.float64)
    radius = 0.4 * torch.rand(len(direction), 1, dtype=torch.float64) ** (1 / 6)
    x = (x0 + direction / direction.norm(dim=1, keepdim=True) * radius).clamp(0, 1)
    pre = chain.pre_activations(x)
    keep = torch.ones(len(x), dtype=torch.bool)
    for z, phase in zip(pre, phases):
        keep &= ((phase[0] > 0) <= (z >= 0)).all(1) & ((phase[0] < 0) <= (z <= 0)).all(1)
    logits = pre[-1][keep]
    worst = (torch.cat([logits[:, :2], logits[:, 3:]], 1).max(1).values - logits[:, 2]).min()
    assert keep.sum() > 100 and float(bound) <= float(worst) + 1e-9
