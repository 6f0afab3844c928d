"""Bounds for any architecture (Section 4.3 beyond chains): each new kind of layer against its dense
operator's SVD or its exact slope, and the composition over residual additions and concatenations
against the dense Jacobian of small linear networks; a ResNet-style network end to end."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

from intriguing import architectures, spectral, training, zoo
from intriguing.cli import main
from intriguing.errors import IntriguingError


def dense_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """The largest singular value of a (piecewise) linear model's Jacobian at 0, in float64."""
    model = model.double().eval()
    jacobian = torch.autograd.functional.jacobian(model, torch.zeros(1, *input_shape, dtype=torch.float64))
    return float(torch.linalg.matrix_norm(jacobian.reshape(-1, math.prod(input_shape)), ord=2))


class Lambda(nn.Module):
    """A network that is one forward function over some named submodules."""

    def __init__(self, forward, **modules: nn.Module):
        super().__init__()
        self.function = forward
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, x):
        return self.function(self, x)


def conv(cin: int = 3, cout: int = 3, **options) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, options.pop("kernel", 3), padding=options.pop("padding", 1), **options)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels)
    with torch.no_grad():
        norm.weight.normal_()
        norm.running_var.uniform_(0.2, 2.0)
        norm.running_mean.normal_()
    return norm


# --- composition over the graph ---------------------------------------------------------------------------------


def test_residual_addition_adds_the_branch_bounds():
    model = Lambda(lambda m, x: m.b(m.relu(m.a(x))) + x, a=conv(), relu=nn.ReLU(), b=conv())
    table = spectral.spectral_table(model, (3, 6, 6))
    a, relu, b = table.layers
    assert [layer.name for layer in table.layers] == ["a", "relu", "b"]
    assert table.product_bound == pytest.approx(a.bound * relu.bound * b.bound + 1.0, rel=1e-12)
    graph = spectral.trace_graph(model, (3, 6, 6))
    assert not graph.is_chain and graph.merges() == {"sum": 1, "concat": 0}


def test_composed_bounds_hold_for_linear_graphs_and_are_exact_where_they_should_be():
    torch.manual_seed(1)
    residual = Lambda(lambda m, x: m.b(m.a(x)) - 0.5 * x, a=conv(), b=conv(stride=1))
    concatenated = Lambda(lambda m, x: torch.cat([m.a(x), m.b(x)], dim=1), a=conv(), b=conv(cout=2, kernel=1,
                                                                                            padding=0))
    for model in (residual, concatenated):
        table = spectral.spectral_table(model, (3, 5, 5))
        assert table.product_bound >= table.product_exact >= dense_norm(model, (3, 5, 5)) * (1 - 1e-4)
    a, b = (layer.exact for layer in spectral.layer_bounds(concatenated, (3, 5, 5)))
    assert spectral.spectral_table(concatenated, (3, 5, 5)).product_exact == pytest.approx(math.hypot(a, b))
    # x + (its per-channel mean, broadcast over the grid) is I + P with P a projection: norm 2, attained.
    broadcast = Lambda(lambda m, x: x + x.mean((2, 3), keepdim=True))
    table = spectral.spectral_table(broadcast, (2, 3, 4))
    assert table.product_exact == pytest.approx(2.0) and dense_norm(broadcast, (2, 3, 4)) == pytest.approx(2.0)


def test_chains_keep_the_papers_product():
    model = zoo.build("ConvNet", seed=0)
    table = spectral.spectral_table(model, architectures.INPUT_SHAPE)
    assert table.product_bound == math.prod(layer.bound for layer in table.layers)
    assert table.product_exact == math.prod(layer.exact for layer in table.layers)
    assert spectral.trace_graph(model, architectures.INPUT_SHAPE).is_chain


def test_functional_operations_between_modules_are_layers():
    model = Lambda(lambda m, x: m.out(torch.flatten(m.conv(x), 1)), conv=nn.Conv2d(1, 2, 3),
                   out=nn.Linear(2 * 8 * 8, 4))
    chain = nn.Sequential(OrderedDict(conv=model.conv, flatten=nn.Flatten(), out=model.out))
    rows, expected = spectral.layer_bounds(model, (1, 10, 10)), spectral.layer_bounds(chain, (1, 10, 10))
    assert [row.kind for row in rows] == ["Conv2d", "torch.flatten", "Linear"]
    assert [(r.bound, r.exact) for r in rows] == [(r.bound, r.exact) for r in expected]


# --- the new kinds of layers against dense operators and exact slopes ------------------------------------------------


def test_batch_norm_is_folded_into_the_convolution_it_follows():
    torch.manual_seed(2)
    model = nn.Sequential(conv(3, 4, stride=2), batch_norm(4))
    (row,) = spectral.layer_bounds(model, (3, 7, 7))
    assert (row.name, row.kind, row.size, row.stride) == ("0+1", "Conv2d+BatchNorm2d", "3x3x3x4", 2)
    assert row.exact == pytest.approx(dense_norm(model, (3, 7, 7)), rel=1e-4)
    separate = [spectral.layer_bounds(layer, shape)[0] for layer, shape in ((model[0], (3, 7, 7)),
                                                                            (model[1], (4, 4, 4)))]
    assert row.exact * (1 - 1e-9) <= row.bound <= separate[0].bound * separate[1].bound * (1 + 1e-9)
    shared = Lambda(lambda m, x: m.bn(m.conv(x)) + 2 * m.conv(x), conv=model[0], bn=model[1])  # two calls
    assert [row.kind for row in spectral.layer_bounds(shared, (3, 7, 7))] == ["Conv2d+BatchNorm2d", "Conv2d"]
    used_twice = Lambda(lambda m, x: (lambda h: m.bn(h) + h)(m.conv(x)), conv=model[0], bn=model[1])  # not folded
    assert [row.kind for row in spectral.layer_bounds(used_twice, (3, 7, 7))] == ["Conv2d", "BatchNorm2d"]


@pytest.mark.parametrize("model, kind", [
    (Lambda(lambda m, x: F.adaptive_avg_pool2d(x, (2, 3))), "F.adaptive_avg_pool2d"),
    (Lambda(lambda m, x: x.mean((2, 3), keepdim=True)), "Tensor.mean"),
    (Lambda(lambda m, x: torch.mean(x, dim=2)), "torch.mean"),
    (Lambda(lambda m, x: F.avg_pool2d(x, 3, stride=2, padding=1)), "F.avg_pool2d"),
    (Lambda(lambda m, x: x * m.scale), "x * c"),
], ids=["adaptive-avg-pool", "mean", "torch-mean", "avg-pool", "scale"])
def test_functional_linear_layers_bound_their_dense_operator(model, kind):
    if kind == "x * c":
        model.register_buffer("scale", torch.randn(3, 1, 4, generator=torch.Generator().manual_seed(3)))
    (row,) = spectral.layer_bounds(model, (3, 7, 4))
    assert row.kind == kind
    assert row.exact == pytest.approx(dense_norm(model, (3, 7, 4)), rel=1e-4)
    assert row.bound >= row.exact * (1 - 1e-9)


ACTIVATIONS = [nn.ReLU6(), nn.SiLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.Hardswish(), nn.Hardsigmoid(),
               nn.Mish(), nn.ELU(alpha=1.5), nn.Softplus(), nn.LeakyReLU(0.2)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: repr(a))
def test_activation_bound_is_its_largest_slope(activation):
    (row,) = spectral.layer_bounds(activation, (5,))
    x = torch.linspace(-12, 12, 2_400_001, dtype=torch.float64)
    with torch.no_grad():
        steepest = float((activation(x).diff() / x.diff()).abs().max())  # difference quotients: Lipschitz itself
    assert row.bound == row.exact
    assert steepest - 1e-9 <= row.bound <= steepest + 1e-4  # a bound, and attained (Softplus: as x grows)


def test_smooth_activations_have_their_known_largest_slopes():
    silu, gelu = (spectral.layer_bounds(a, (1,))[0].bound for a in (nn.SiLU(), nn.GELU()))
    assert gelu == pytest.approx(0.5 * (1 + math.erf(1)) + math.exp(-1) / math.sqrt(math.pi), rel=1e-12)  # x = sqrt 2
    # SiLU's slope s + x s (1 - s) is largest where 2 + x (1 - 2 s(x)) = 0, i.e. x = 2.39936...
    root = 2.399357280515467
    sigmoid = 1 / (1 + math.exp(-root))
    assert silu == pytest.approx(sigmoid * (1 + root * (1 - sigmoid)), rel=1e-12)


def test_functional_activations_get_the_bounds_of_their_modules():
    model = Lambda(lambda m, x: F.hardswish(F.gelu(F.silu(F.relu6(x)))))
    rows = spectral.layer_bounds(model, (4,))
    assert [row.kind for row in rows] == ["F.relu6", "F.silu", "F.gelu", "F.hardswish"]
    modules = (nn.ReLU6(), nn.SiLU(), nn.GELU(), nn.Hardswish())
    assert [row.bound for row in rows] == [spectral.layer_bounds(m, (4,))[0].bound for m in modules]


# --- what is refused ---------------------------------------------------------------------------------------------


def test_a_product_of_two_branches_is_refused():
    model = Lambda(lambda m, x: m.a(x) * torch.sigmoid(m.b(x)), a=conv(), b=conv())
    with pytest.raises(IntriguingError, match="no global Lipschitz constant"):
        spectral.layer_bounds(model, (3, 5, 5))


class SamePaddedConv(nn.Conv2d):
    """A convolution with its own forward (TF "SAME" padding first), as some model zoos write them."""

    def forward(self, x):
        return super().forward(F.pad(x, (0, 2, 0, 2)))


class RenamedConv(nn.Conv2d):
    """A subclass that only renames: the convolution's bound still describes it."""


def test_a_layer_whose_own_forward_replaces_its_kinds_is_refused_not_misread():
    """A bug seen on efficientnet-lite-pytorch: its padded Conv2d subclasses were bounded as plain convolutions."""
    model = nn.Sequential(SamePaddedConv(3, 4, 3), nn.ReLU())
    with pytest.raises(IntriguingError, match="'0'.*SamePaddedConv.*own forward.*register_bound\\(SamePaddedConv\\)"):
        spectral.layer_bounds(model, (3, 6, 6))
    assert spectral.layer_bounds(nn.Sequential(RenamedConv(3, 4, 3), nn.ReLU()), (3, 6, 6))


class HiddenResidual(nn.Module):
    """An in-place residual addition in a forward pass torch.fx cannot trace: the hooks alone would miss it."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = conv(), nn.ReLU()

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > -math.inf:
            h += x
        return self.relu(h)


def test_an_in_place_change_between_layers_is_not_taken_for_a_chain():
    with pytest.raises(IntriguingError, match="'relu' .* not a chain of modules"):
        spectral.layer_bounds(HiddenResidual(), (3, 5, 5))


# --- a ResNet-style network end to end -------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """He et al.'s basic block as torchvision writes it (shared in-place ReLU, ``out += identity``)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, cout, stride=stride, bias=False), batch_norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv(cout, cout, bias=False), batch_norm(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, kernel=1, padding=0, stride=stride, bias=False),
                                            batch_norm(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.relu = conv(1, 4, stride=2), batch_norm(4), nn.ReLU()
        self.layer1, self.layer2 = BasicBlock(4, 4, 1), BasicBlock(4, 8, 2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, architectures.NUM_CLASSES)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn(self.conv(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_resnet_bounds_lie_above_what_the_network_does():
    torch.manual_seed(4)
    model = TinyResNet().eval()
    images = torch.rand(8, *architectures.INPUT_SHAPE, generator=torch.Generator().manual_seed(5))
    nearby = (images + 0.01 * torch.randn(images.shape, generator=torch.Generator().manual_seed(6))).clamp(0, 1)
    table = spectral.spectral_table(model, architectures.INPUT_SHAPE, images=images, pairs=(images, nearby))
    kinds = [layer.kind for layer in table.layers]
    assert kinds.count("Conv2d+BatchNorm2d") == 6 and "BatchNorm2d" not in kinds and "torch.flatten" in kinds
    assert table.product_bound >= table.product_exact >= max(table.gradient_lower_bound, table.pair_lower_bound) > 0
    assert spectral.trace_graph(model, architectures.INPUT_SHAPE).merges() == {"sum": 2, "concat": 0}


def test_cli_bounds_a_resnet_style_checkpoint(tmp_path, monkeypatch):
    spec = zoo.ModelSpec("TinyResNet", "a ResNet-style test network", TinyResNet,
                         training.TrainRecipe(epochs=1, weight_decay={}))
    monkeypatch.setitem(zoo._REGISTRY, spec.name, spec)
    torch.manual_seed(7)
    path = tmp_path / "resnet.safetensors"
    save_file(TinyResNet().state_dict(), path)  # weights exported elsewhere: no integrity hash
    result = CliRunner().invoke(main, ["lipschitz", str(path), "--arch", "TinyResNet", "--images", "5"])
    assert result.exit_code == 0, result.output
    assert "| `conv+bn` | Conv2d+BatchNorm2d | 1x3x3x4 | 2 |" in result.output
    assert "Not a chain (2 sums of branches, 0 concatenations)" in result.output
    assert "max ||df/dx|| over test images (5)" in result.output


def test_in_place_operations_change_what_later_reads_see():
    model = Lambda(lambda m, x: (lambda h: (h.mul_(3), F.relu(h, inplace=True), h)[-1])(m.conv(x)), conv=conv())
    rows = spectral.layer_bounds(model, (3, 5, 5))
    table = spectral.spectral_table(model, (3, 5, 5))
    assert [row.kind for row in rows] == ["Conv2d", "F.relu"]
    assert table.product_exact == pytest.approx(3 * rows[0].exact)
    assert table.product_exact >= dense_norm(model, (3, 5, 5)) * (1 - 1e-4)


def test_constant_padding_and_copies_are_isometries():
    model = Lambda(lambda m, x: m.conv(F.pad(x.clone().contiguous(), (1, 0, 2, 1))), conv=conv(padding=0))
    rows = spectral.layer_bounds(model, (3, 5, 5))
    assert [(row.kind, row.bound, row.output_shape) for row in rows[:1]] == [("F.pad", 1.0, [3, 8, 6])]
    assert spectral.spectral_table(model, (3, 5, 5)).product_exact >= dense_norm(model, (3, 5, 5)) * (1 - 1e-4)
    with pytest.raises(IntriguingError, match="F.pad\\(mode='reflect'\\) repeats entries"):
        spectral.layer_bounds(Lambda(lambda m, x: m.conv(F.pad(x, (1, 1, 1, 1), mode="reflect")), conv=conv()),
                              (3, 5, 5))
