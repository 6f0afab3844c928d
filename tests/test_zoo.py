"""The registry: the paper's names, output shapes, named layers, helpful misses."""

from __future__ import annotations

import pytest
import torch

from intriguing import zoo
from intriguing.errors import IntriguingError

PAPER_NAMES = ["FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "FC123-456-10", "AE400-10"]


def test_every_paper_model_is_registered():
    assert set(PAPER_NAMES) <= set(zoo.names())
    assert "ConvNet" in zoo.names()


@pytest.mark.parametrize("name", zoo.names())
def test_models_map_images_to_ten_logits(name):
    model = zoo.build(name).eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name, hidden", [("FC100-100-10", (100, 100)), ("FC123-456-10", (123, 456)), ("FC200-200-10", (200, 200))])
def test_sigmoid_nets_expose_their_hidden_layers_by_name(name, hidden):
    model = zoo.build(name)
    modules = dict(model.named_modules())
    assert isinstance(modules["h1"], torch.nn.Sigmoid) and isinstance(modules["h2"], torch.nn.Sigmoid)
    assert (modules["fc1"].out_features, modules["fc2"].out_features) == hidden
    assert zoo.spec(name).recipe.weight_decay == {"fc1": 1e-5, "fc2": 1e-5, "out": 1e-6}


def test_conv_net_pooling_before_its_relus_is_bit_for_bit_conv_relu_pool():
    """The ConvNet pools before each ReLU (a quarter of the ReLU work): outputs, input gradients and weight
    gradients are exactly those of the textbook order, ties and all-negative windows included."""
    pooled_first = zoo.build("ConvNet", seed=3)
    modules = dict(pooled_first.named_children())
    textbook = torch.nn.Sequential(*(modules[name] for name in
                                     ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1",
                                      "features", "out"]))
    x = torch.rand(6, 1, 28, 28)
    x[0] = 0.0  # constant windows: ties in every pool, all-negative pre-activations where the bias is negative
    grads = []
    for model in (pooled_first, textbook):
        point = x.clone().requires_grad_(True)
        logits = model(point)
        logits.square().sum().backward()
        grads.append((logits.detach(), point.grad, *(p.grad.clone() for p in model.parameters())))
        model.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_softmax_regressions_differ_only_in_weight_decay():
    lams = [zoo.spec(n).recipe.weight_decay["out"] for n in PAPER_NAMES[:3]]
    assert lams == [1e-4, 1e-2, 1.0]


def test_autoencoder_decoder_is_not_in_the_forward_path():
    model = zoo.build("AE400-10")
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.append(n)) for n, m in model.named_children()]
    model(torch.rand(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert seen == ["flatten", "encoder", "h1", "out"]


def test_unknown_name_lists_close_matches():
    with pytest.raises(IntriguingError, match=r"unknown model 'FC100-100'.*did you mean.*'FC100-100-10'"):
        zoo.build("FC100-100")


@pytest.mark.parametrize("name, record", [
    ("FC100-100-10", "baselines/long-adam-lr0.01-e60-bs64-s0-test.json"),
    ("FC200-200-10", "fc200/fc200-adam-lr0.01-e60-s0-test.json"),
])
def test_table1_sigmoid_nets_train_with_the_recipe_the_experiment_record_tested(name, record):
    """The zoo's recipe is the one whose test errors experiments/RESULTS.md reports (issue 16)."""
    from pathlib import Path

    from intriguing import records

    path = Path(__file__).resolve().parents[1] / "experiments" / record
    if not path.is_file():
        pytest.skip(f"{path.name}: the experiment record is not there yet")
    tested = records.read_json(path)
    recipe = records.to_jsonable(zoo.spec(name).recipe.__dict__)
    assert recipe == tested["recipe"] | {"dropout": tested["config"]["dropout"]}
    assert tested["config"]["model"] == name
