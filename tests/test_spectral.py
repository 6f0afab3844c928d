"""Spectral analysis (Section 4.3, Table 5) against oracles: every linear layer's dense matrix, built
explicitly from the module itself, and its numpy SVD; closed forms attained by hand-made inputs; the
product bound against data gradients and adversarial pairs."""

from __future__ import annotations

import copy
import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing import alexnet, architectures, checkpoint, data, runner, spectral, zoo
from intriguing.attacks import LBFGSConfig
from intriguing.cli import main
from intriguing.errors import IntriguingError
from intriguing.paper.sections import table5
from intriguing.paper.tables import paper
from intriguing.records import to_jsonable


def dense_matrix(module: nn.Module, input_shape: tuple[int, ...]) -> np.ndarray:
    """The linear part of ``module`` as an explicit (outputs x inputs) matrix: column i is ``f(e_i) - f(0)``."""
    n = math.prod(input_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *input_shape)
    module = copy.deepcopy(module).double().eval()
    with torch.no_grad():
        columns = module(basis) - module(torch.zeros_like(basis[:1]))
    return columns.reshape(n, -1).T.numpy()


def top_singular_value(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    return float(np.linalg.svd(dense_matrix(module, input_shape), compute_uv=False)[0])


def seeded_conv(seed: int = 0, channels: tuple[int, int] = (3, 4), kernel: int = 3, **options) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(*channels, kernel, **options)


def fourier_bound(conv: nn.Conv2d, size: tuple[int, int], stride=None) -> float:
    return spectral.conv_fourier_bound(conv.weight, size, stride=conv.stride if stride is None else stride,
                                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                                       padding_mode=conv.padding_mode)[0]


# Small convolutions covering every padding mode, strides 1-3, dilation, groups (depthwise too), non-square inputs.
CONVOLUTIONS = [
    (dict(padding=1, padding_mode="circular"), (8, 8)),
    (dict(stride=2, padding=1, padding_mode="circular"), (8, 6)),
    (dict(padding=1), (7, 7)),
    (dict(stride=2, padding=2), (9, 8)),
    (dict(stride=3), (10, 10)),
    (dict(stride=(2, 1), padding=1), (8, 5)),
    (dict(stride=2, padding=1, padding_mode="reflect"), (8, 8)),
    (dict(padding=2, padding_mode="replicate"), (6, 6)),
    (dict(kernel=4, padding="same"), (6, 7)),
    (dict(channels=(4, 6), stride=2, padding=1, dilation=2, groups=2), (8, 8)),
    (dict(channels=(4, 8), padding=1, groups=4), (6, 6)),  # depthwise, two filters per channel
    (dict(channels=(3, 3), stride=2, padding=1, groups=3, padding_mode="reflect"), (7, 7)),  # depthwise, strided
]


@pytest.mark.parametrize("options, size", CONVOLUTIONS)
def test_exact_conv_norm_equals_the_dense_operators_svd(options, size):
    conv = seeded_conv(**options)
    shape = (conv.in_channels, *size)
    norm = spectral.operator_norm(spectral.conv2d_map(conv), shape)
    assert norm.converged
    assert norm.value == pytest.approx(top_singular_value(conv, shape), rel=1e-4)


@pytest.mark.parametrize("stride, size", [(1, (8, 8)), (2, (8, 8)), (2, (6, 10))])
def test_fourier_bound_is_exact_for_circular_padding(stride, size):
    conv = seeded_conv(stride=stride, padding=1, padding_mode="circular")
    exact = top_singular_value(conv, (3, *size))
    assert fourier_bound(conv, size) == pytest.approx(exact, rel=1e-9)
    # Subsampling keeps a subset of the stride-1 outputs: the stride-aware formula is never looser.
    assert fourier_bound(conv, size) <= fourier_bound(conv, size, stride=1) * (1 + 1e-12)


@pytest.mark.parametrize("options, size", CONVOLUTIONS)
def test_fourier_bound_is_never_below_the_exact_norm(options, size):
    conv = seeded_conv(seed=1, **options)
    assert fourier_bound(conv, size) >= top_singular_value(conv, (conv.in_channels, *size)) * (1 - 1e-9)


def test_fourier_bound_on_the_input_grid_alone_would_not_bound_zero_padding():
    """Why the grid is enlarged: for zero padding the formula on the input's own grid falls below the norm."""
    conv = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]]]))  # Laplacian
    circular = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    circular.weight = conv.weight
    size = (5, 5)
    exact = top_singular_value(conv, (1, *size))
    assert fourier_bound(circular, size) < exact <= fourier_bound(conv, size)


def test_linear_bound_is_the_largest_singular_value():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(30, 20))
    (flatten, linear) = spectral.layer_bounds(model, (5, 6))
    expected = float(np.linalg.svd(model[1].weight.detach().double().numpy(), compute_uv=False)[0])
    assert linear.bound == linear.exact == pytest.approx(expected, rel=1e-4)
    assert (flatten.bound, linear.size, linear.ratio) == (1.0, "30x20", 1.0)


def batch_norm_with_statistics() -> nn.BatchNorm2d:
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.weight.normal_()
        norm.running_var.uniform_(0.1, 2.0)
        norm.running_mean.normal_()
    return norm


@pytest.mark.parametrize("module", [nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), nn.AvgPool2d(2),
                                    nn.AdaptiveAvgPool2d((3, 4)), batch_norm_with_statistics()],
                         ids=["avg-pool-overlapping", "avg-pool", "adaptive-avg-pool", "batch-norm"])
def test_other_linear_layers_bound_their_dense_operator(module):
    shape = (3, 7, 8)
    (record,) = spectral.layer_bounds(module, shape)
    exact = top_singular_value(module, shape)
    assert record.exact == pytest.approx(exact, rel=1e-4)
    assert record.bound >= exact * (1 - 1e-9)


# --- closed forms and the layer walk ------------------------------------------------------------------------


def test_overlapping_max_pool_is_two_lipschitz_and_that_is_attained():
    pool = nn.MaxPool2d(3, stride=2)
    (bound,) = spectral.layer_bounds(pool, (1, 7, 7))
    assert bound.bound == bound.exact == 2.0
    # Pixel (2, 2) lies in four 3x3 windows; as their common maximum, moving it moves all four outputs.
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 2, 2] = 1.0
    moved = x.clone()
    moved[0, 0, 2, 2] += 0.5
    assert (pool(moved) - pool(x)).norm() == pytest.approx(2.0 * 0.5)
    (plain,) = spectral.layer_bounds(nn.MaxPool2d(2), (1, 8, 8))
    assert plain.bound == 1.0


def test_response_normalisation_bound_holds_everywhere_and_is_attained_at_zero():
    norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    (record,) = spectral.layer_bounds(norm, (12, 1, 1))
    assert record.bound == pytest.approx(2.0**-0.75)

    def jacobian_norm(a: torch.Tensor) -> float:
        jacobian = torch.autograd.functional.jacobian(lambda v: norm(v.view(1, 12, 1, 1)).view(12), a)
        return float(torch.linalg.matrix_norm(jacobian, ord=2))

    generator = torch.Generator().manual_seed(0)
    points = [scale * torch.randn(12, generator=generator, dtype=torch.float64) for scale in (1, 30, 100, 300, 1e3)]
    assert max(jacobian_norm(a) for a in points) <= record.bound * (1 + 1e-9)
    assert jacobian_norm(torch.zeros(12, dtype=torch.float64)) == pytest.approx(record.bound)


def test_walk_follows_execution_order_and_skips_unused_modules():
    calls = spectral.trace_layers(zoo.build("AE400-10"), architectures.INPUT_SHAPE)  # its decoder is not in forward
    assert [c.name for c in calls] == ["flatten", "encoder", "h1", "out"]
    rows = spectral.layer_bounds(zoo.build("FC100-100-10"), architectures.INPUT_SHAPE)
    assert [(r.kind, r.bound) for r in rows if r.kind == "Sigmoid"] == [("Sigmoid", 0.25)] * 2
    kinds = [r.kind for r in spectral.layer_bounds(zoo.build("ConvNet"), architectures.INPUT_SHAPE)]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU", "Flatten", "Linear", "ReLU",
                     "Linear"]


def test_same_seed_same_numbers():
    model = zoo.build("ConvNet")
    first, second = (spectral.layer_bounds(model, architectures.INPUT_SHAPE, seed=5) for _ in range(2))
    assert [(r.bound, r.exact) for r in first] == [(r.bound, r.exact) for r in second]


class FunctionalFlattenWithControlFlow(nn.Module):
    """A functional op between modules, in a forward pass torch.fx cannot trace (it branches on values)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.out = nn.Linear(2 * 26 * 26, 10)

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > -math.inf:
            h = torch.flatten(h, 1)
        return self.out(h)


def test_models_that_are_not_a_chain_of_modules_are_refused():
    with pytest.raises(IntriguingError, match="'out' .* not a chain of modules .* nn.Flatten"):
        spectral.layer_bounds(FunctionalFlattenWithControlFlow(), (1, 28, 28))


class Doubling(nn.Module):
    def forward(self, x):
        return 2 * x


def test_unknown_layer_kinds_fail_saying_how_to_register_one():
    model = nn.Sequential(nn.Flatten(), Doubling())
    with pytest.raises(IntriguingError, match=r"no Lipschitz bound for modules of type Doubling.*register_bound"):
        spectral.layer_bounds(model, (4,))
    spectral.register_bound(Doubling)(lambda call, settings: spectral.BoundEstimate(2.0, 2.0, "factor 2"))
    assert [r.bound for r in spectral.layer_bounds(model, (4,))] == [1.0, 2.0]


@pytest.mark.parametrize("shape, message", [((28, 28), "does not accept inputs shaped"),
                                            ((1, 0, 28), "expected the shape of one input")])
def test_bad_input_shapes_are_one_clear_error(shape, message):
    with pytest.raises(IntriguingError, match=message):
        spectral.layer_bounds(zoo.build("ConvNet"), shape)


def test_non_finite_weights_are_refused():
    model = zoo.build("FC100-100-10")
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    with pytest.raises(IntriguingError, match="fc1.weight"):
        spectral.layer_bounds(model, architectures.INPUT_SHAPE)


# --- the product bound against empirical lower bounds ----------------------------------------------------------


def test_gradient_lower_bound_is_the_largest_dense_jacobian_norm():
    torch.manual_seed(0)
    model = zoo.build("ConvNet").eval()
    images = data.load_mnist("test")[0][:6]
    expected = max(float(torch.linalg.matrix_norm(torch.autograd.functional.jacobian(model, x[None]).reshape(10, -1),
                                                  ord=2)) for x in images)
    assert spectral.gradient_lower_bound(model, images, batch_size=4) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["FC100-100-10", "ConvNet"])
def test_product_bound_is_at_least_every_empirical_ratio(name):
    torch.manual_seed(0)
    model = zoo.build(name).eval()
    images, labels = data.load_mnist("test")
    x = images[:50]
    generator = torch.Generator().manual_seed(1)
    nearby = (x + 0.05 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    table = spectral.spectral_table(model, architectures.INPUT_SHAPE, images=x, pairs=(x, nearby))
    ratios = spectral.pair_ratios(model, x, nearby)
    assert table.product_bound >= table.product_exact >= table.gradient_lower_bound >= 0
    assert table.product_exact >= float(ratios.max()) == table.pair_lower_bound
    assert table.pairs == table.images == 50


def test_adversarial_pairs_respect_the_product_bound():
    model = zoo.trained("FC100-100-10", limit=2000, overrides={"epochs": 3}, progress=False).model
    images, labels = data.load_mnist("test")
    x, adversarial = spectral.adversarial_pairs(model, images[:8], labels[:8],
                                                LBFGSConfig.refined(max_solves=5, max_iter=30))
    assert len(x) > 0 and (adversarial != x).flatten(1).any(1).all()
    table = spectral.spectral_table(model, architectures.INPUT_SHAPE, pairs=(x, adversarial))
    assert 0 < table.pair_lower_bound <= table.product_exact <= table.product_bound


def test_pairs_must_match_and_differ():
    model = zoo.build("FC100-100-10")
    x = data.load_mnist("test")[0][:3]
    with pytest.raises(IntriguingError, match="same shape"):
        spectral.pair_ratios(model, x, x[:2])
    with pytest.raises(IntriguingError, match="3 pair\\(s\\) have x' == x"):
        spectral.pair_ratios(model, x, x.clone())


# --- AlexNet (Table 5) ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_alexnet() -> nn.Module:
    return alexnet.alexnet(seed=0)


def test_alexnet_has_the_layer_sizes_of_table5(random_alexnet):
    for name, row in zip(alexnet.TABLE5_LAYERS, paper("table5")["rows"]):
        layer = getattr(random_alexnet, name)
        if isinstance(layer, nn.Conv2d):
            size = f"{layer.in_channels}x{layer.kernel_size[0]}x{layer.kernel_size[1]}x{layer.out_channels}"
            assert (size, layer.stride[0]) == (row["size"], row["stride"]), name
        else:
            assert f"{layer.in_features}x{layer.out_features}" == row["size"], name
    calls = spectral.trace_layers(random_alexnet, alexnet.INPUT_SHAPE)
    shapes = {c.name: c.output_shape for c in calls}
    assert shapes["conv1"] == (96, 55, 55) and shapes["pool5"] == (256, 6, 6) and shapes["fc3"] == (1000,)


def test_alexnet_weights_are_seeded_and_load_from_safetensors(random_alexnet, tmp_path):
    again = alexnet.alexnet(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(random_alexnet.state_dict().values(), again.state_dict().values()))
    path = tmp_path / "alexnet.safetensors"
    checkpoint.save_model(again, path)
    loaded = alexnet.alexnet(path, seed=1)
    assert torch.equal(loaded.conv1.weight, random_alexnet.conv1.weight)
    assert not torch.equal(alexnet.alexnet(seed=1).conv1.weight, random_alexnet.conv1.weight)


def test_alexnet_weights_of_the_wrong_shape_are_a_clear_error(random_alexnet):
    state = dict(random_alexnet.state_dict())
    for name in ("conv2", "conv4", "conv5"):  # the original two-GPU split: each half sees half the channels
        weight = state[f"{name}.weight"]
        state[f"{name}.weight"] = weight[:, : weight.shape[1] // 2]
    with pytest.raises(IntriguingError, match=r"conv2.weight: checkpoint \(256, 48, 5, 5\) vs model \(256, 96, 5, 5\)"):
        alexnet.alexnet(state)
    assert alexnet.alexnet(state, groups=2).conv4.weight.shape == (384, 192, 3, 3)


def small_alexnet_like() -> nn.Sequential:
    """AlexNet's kinds of layers under its names, small enough to bound in a test."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 5, stride=2), relu1=nn.ReLU(), norm1=nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
        pool1=nn.MaxPool2d(3, 2), flatten=nn.Flatten(), fc1=nn.Linear(8 * 3 * 3, 10), drop6=nn.Dropout(0.5),
    ))


def test_layer_table_shows_uneven_strides():
    table = spectral.spectral_table(nn.Conv2d(1, 2, 3, stride=(2, 1)), (1, 7, 7), name="conv")
    assert table.layers[0].stride == [2, 1]
    assert "| `Conv2d` | Conv2d | 1x3x3x2 | 2x1 | 1x7x7 → 2x3x5 |" in table5.layers_markdown(to_jsonable(table))


def test_alexnet_kinds_of_layers_get_their_bounds_and_the_report_shows_the_papers_column():
    table = spectral.spectral_table(small_alexnet_like(), (3, 17, 17), name="AlexNet")
    bounds = {layer.name: layer.bound for layer in table.layers}
    assert bounds["norm1"] == pytest.approx(2**-0.75) and bounds["pool1"] == 2.0 and bounds["drop6"] == 1.0
    conv = table.layers[0]
    assert conv.stride == 2 and conv.bound >= conv.exact and "stride 2" in conv.method
    result = {"paper": paper("table5")["rows"], "alexnet": to_jsonable(table), "mnist": [], "protocol": {}}
    text = table5.SECTION.render(result, None)
    assert "**Our weights are random**" in text and "| `conv1` | Conv2d | 3x5x5x8 | 2 |" in text
    assert "| 2.75 |" in text and "| 3.12 |" in text  # the paper's Conv. 1 and FC. 1 bounds beside ours


# --- the section and the command line -----------------------------------------------------------------------------


def test_section_runs_renders_and_checks_its_claims(tmp_path):
    settings = table5.Table5Settings(alexnet=False, models=("FC100-100-10",), images=20, pairs=5, limit=2000,
                                     overrides={"epochs": 3}, attack=LBFGSConfig.refined(max_solves=5, max_iter=30))
    ctx = runner.Context(preset="smoke", out=tmp_path, progress=False)
    result = table5.SECTION.run(ctx, settings, {})
    json.dumps(result, allow_nan=False)
    (table,) = result["mnist"]
    assert table["model"] == "FC100-100-10" and table["images"] == 20
    text = table5.SECTION.render(result, ctx)
    assert "AlexNet (Table 5 itself) is bounded in the `default` and `full` presets" in text
    assert "| FC100-100-10 |" in text
    assert all(claim.holds for claim in table5.SECTION.claims(result))


@pytest.mark.parametrize("lower, holds", [(0.36702949802766316, True), (0.3671, False)])
def test_product_check_allows_rounding_only(lower, holds):
    """A bug: the full preset's FC10(1) failed the sanity check "the product bounds the network" with product
    0.36702949683530217 (one linear layer: its norm by Lanczos, the map in float32) below the Jacobian's
    norm 0.36702949802766316: the same number, computed twice. Rounding is allowed, a real excess is not."""
    table = {"model": "FC10(1)", "product_bound": 0.36702949683530217, "gradient_lower_bound": lower,
             "pair_lower_bound": 0.3244939072786358, "layers": []}
    (claim,) = table5.claims({"alexnet": None, "mnist": [table]})
    assert claim.holds is holds


def test_cli_bounds_a_checkpoint_and_saves_json(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "convnet.safetensors"
    checkpoint.save_model(zoo.build("ConvNet"), path)
    out = tmp_path / "table.json"
    result = CliRunner().invoke(main, ["lipschitz", str(path), "--arch", "ConvNet", "--images", "10",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "| `conv1` | Conv2d | 1x5x5x16 | 1 |" in result.output and "Product of the bounds" in result.output
    saved = json.loads(out.read_text())
    assert saved["settings"]["arch"] == "ConvNet" and len(saved["table"]["layers"]) == 10


@pytest.mark.parametrize("arguments, message", [
    (["FC100-100"], "error: unknown model 'FC100-100'"),
    (["{path}"], "a checkpoint needs its architecture: pass --arch NAME"),
    (["{path}", "--arch", "ConvNett"], "error: unknown architecture 'ConvNett': did you mean 'ConvNet'"),
    (["alexnet", "--weights", "{path}"], "weights do not fit the model: missing conv3.weight"),
])
def test_cli_mistakes_are_one_line(tmp_path, arguments, message):
    path = tmp_path / "convnet.safetensors"
    checkpoint.save_model(zoo.build("ConvNet"), path)
    result = CliRunner().invoke(main, ["lipschitz", *(a.format(path=path) for a in arguments)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
