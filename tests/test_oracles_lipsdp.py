"""LipSDP-Neuron (oracles.lipsdp): exact where the constant is known, between the lower and product bounds otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from intriguing.errors import IntriguingError
from intriguing.oracles import jacobian_lower_bound, lipsdp, product_bound

pytest.importorskip("cvxpy")


def test_linear_network_constant_is_the_spectral_norm_of_the_product():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Linear(5, 4))
    product = net[2].weight.double() @ net[1].weight.double()
    bound = lipsdp(net)
    assert bound.value == pytest.approx(float(torch.linalg.matrix_norm(product.detach().double(), ord=2)), rel=1e-9)


@pytest.mark.parametrize("activation, slope", [(nn.ReLU, 1.0), (nn.Sigmoid, 0.25)])
def test_one_hidden_unit_is_exact(activation, slope):
    """f(x) = w2 phi(w1 . x + b): the constant is slope_max * ||w1|| * ||w2||, attained where phi' is largest."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 1), activation(), nn.Linear(1, 3))
    true = slope * float(net[0].weight.detach().double().norm() * net[2].weight.detach().double().norm())
    assert lipsdp(net).value == pytest.approx(true, rel=1e-5)
    assert product_bound(net) == pytest.approx(true, rel=1e-9)


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Sigmoid])
def test_lipsdp_lies_between_the_jacobian_lower_bound_and_the_product(activation):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(10, 16), activation(), nn.Linear(16, 16), activation(),
                        nn.Linear(16, 3))
    lower = jacobian_lower_bound(net, torch.rand(3000, 10) * 8 - 4)
    bound = lipsdp(net)
    assert bound.status == "optimal" and bound.size == 10 + 32
    assert lower <= bound.value * (1 + 1e-6)
    assert bound.value <= product_bound(net) * (1 + 1e-6)
    assert bound.value < 0.9 * product_bound(net)  # the point of LipSDP: tighter than the paper's product
    scs = lipsdp(net, solver="SCS", eps=1e-7)
    assert scs.value == pytest.approx(bound.value, rel=1e-3)
    quick = lipsdp(net, solver="SCS")  # the default tolerances, as on the zoo's nets (SCS_TOLERANCES)
    assert quick.value == pytest.approx(bound.value, rel=2e-3)


def test_first_layer_is_reduced_to_its_rank():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(50, 4), nn.ReLU(), nn.Linear(4, 2))
    assert lipsdp(net).size == 4 + 4


def test_unsupported_models_are_refused():
    with pytest.raises(IntriguingError, match="model:"):
        lipsdp(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)))


def test_scs_keeps_its_tolerances_unless_given_others(monkeypatch):
    import cvxpy as cp

    from intriguing.oracles.lipsdp import SCS_TOLERANCES

    seen = []
    solve = cp.Problem.solve
    monkeypatch.setattr(cp.Problem, "solve", lambda self, **options: seen.append(options) or solve(self, **options))
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Sigmoid(), nn.Linear(4, 2))
    for options in ({}, {"max_iters": 20_000}, {"eps": 1e-7}):
        lipsdp(net, solver="SCS", **options)
    assert seen == [{"solver": "SCS", **SCS_TOLERANCES}, {"solver": "SCS", **SCS_TOLERANCES, "max_iters": 20_000},
                    {"solver": "SCS", "eps": 1e-7}]
