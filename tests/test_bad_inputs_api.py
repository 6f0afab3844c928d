"""The Python API given the wrong kinds of input: one clear IntriguingError, never a deep traceback.

Lists and numpy arrays where tensors are expected, empty batches, and models that reject the
input shape: each is named with what was expected and how to convert it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from intriguing import oracles, spectral, training, transfer, zoo
from intriguing.attacks import LBFGS, LBFGSConfig, rms_distortion
from intriguing.errors import IntriguingError


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


X = torch.rand(2, 1, 4, 4)


@pytest.mark.parametrize("convert, got", [(np.asarray, "ndarray"), (torch.Tensor.tolist, "list")])
def test_rms_distortion_wants_tensors(convert, got):
    with pytest.raises(IntriguingError, match=f"x: expected a torch.Tensor, got {got}"):
        rms_distortion(convert(X), X)
    with pytest.raises(IntriguingError, match=f"x_adv: expected a torch.Tensor, got {got}"):
        rms_distortion(X, convert(X))


@pytest.mark.parametrize("convert, got", [(np.asarray, "ndarray"), (torch.Tensor.tolist, "list")])
def test_predictions_and_errors_want_tensors(net, convert, got):
    with pytest.raises(IntriguingError, match=f"x: expected a torch.Tensor, got {got}"):
        transfer.predictions(net, convert(X))
    with pytest.raises(IntriguingError, match=f"y: expected an int64 tensor of class indices, got {got}"):
        transfer.error_estimate(net, X, convert(torch.tensor([0, 1])))


def test_predictions_of_an_empty_batch_are_empty(net):
    """No examples, no predictions: an empty (0,) tensor rather than torch.cat's ValueError."""
    assert transfer.predictions(net, X[:0]).shape == (0,)


def test_a_model_that_rejects_the_input_shape_is_one_line(net):
    """torch.fx appends the failing graph node on further lines; the error stays one line."""
    with pytest.raises(IntriguingError, match=r"inputs shaped \(1, 5, 5\)") as info:
        spectral.layer_bounds(net, (1, 5, 5))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", [3, ["ConvNet"], None])
def test_a_zoo_name_that_is_no_string(name):
    """zoo.spec(["ConvNet"]) was 'unhashable type: list', zoo.build(3) a difflib TypeError."""
    with pytest.raises(IntriguingError, match=r"model name: expected a string such as 'ConvNet', got "):
        zoo.build(name)


@pytest.mark.parametrize("images, labels, message", [
    (X.numpy(), torch.tensor([0, 1]), "images: expected a torch.Tensor, got ndarray"),
    (X, [0, 1], "labels: expected an int64 tensor of class indices, got list"),
    (X, torch.tensor([0]), r"labels: expected shape \(2,\) to match the batch of 2 inputs"),
    (X[:0], torch.tensor([], dtype=torch.int64), "images: expected a non-empty batch"),
])
def test_error_rate_checks_its_inputs(net, images, labels, message):
    """Were a TypeError, 'bool has no attribute sum', a size-mismatch RuntimeError and a ZeroDivisionError."""
    with pytest.raises(IntriguingError, match=message):
        training.error_rate(net, images, labels)


# --- silently wrong answers -----------------------------------------------------------------------


def test_labels_beyond_the_models_classes_are_refused_not_counted_as_errors(net):
    """A bug: labels 5..7 for a 3-class model gave an error rate of 100% (no prediction can equal them)."""
    y = torch.tensor([5, 6])
    with pytest.raises(IntriguingError, match=r"y: class indices must lie in \[0, 2\], got range \[5, 6\]"):
        transfer.error_estimate(net, X, y)
    with pytest.raises(IntriguingError, match=r"y: class indices must lie in \[0, 2\]"):
        transfer.transfer_table({"a": net}, {"row": X}, X, y)


def test_nan_inputs_are_refused_not_classified(net):
    """A bug: NaN images were 'predicted' as class 0 (argmax of NaN logits) and counted in error rates."""
    with pytest.raises(IntriguingError, match="x: contains NaN or infinite values"):
        transfer.error_estimate(net, X * float("nan"), torch.tensor([0, 1]))
    with pytest.raises(IntriguingError, match="x: contains NaN or infinite values"):
        transfer.predictions(net, X * float("nan"))


@pytest.mark.parametrize("call, message", [
    (lambda net: transfer.predictions(nn.Sequential(net, nn.Flatten(0)), X),
     r"model: expected logits shaped \(N, classes\) = \(2, K >= 2\)"),
    (lambda net: transfer.predictions(net, X, batch_size=0), "batch_size: expected an integer >= 1, got 0"),
    (lambda net: transfer.predictions(net, (X * 255).to(torch.uint8)), "x: expected a floating-point tensor"),
    (lambda net: transfer.attack_model(net, X, torch.tensor([1, 2]), batch_size=2.5),
     "batch_size: expected an integer >= 1, got 2.5"),
    (lambda net: transfer.attack_model(net, X, torch.tensor([1, 2]), attack=LBFGSConfig()),
     r"attack: expected an Attack such as LBFGS\(config\), got LBFGSConfig"),
    (lambda net: transfer.attack_model(net, X, torch.tensor([1, 2]), attack=LBFGS),
     r"attack: expected an Attack such as LBFGS\(config\), got the class LBFGS"),
    (lambda net: transfer.cross_model_table([net], X, torch.tensor([0, 1])),
     r"models: expected a non-empty dict of name -> torch.nn.Module classifier, got list"),
    (lambda net: transfer.cross_model_table({"a": net}, X, torch.tensor([0, 1]), gaussian=0.1),
     r"gaussian: expected a sequence of stddevs such as \(0.1, 0.3\), got 0.1"),
    (lambda net: transfer.cross_model_table({"a": net, "b": nn.Sequential(nn.Flatten(), nn.Linear(16, 5))}, X,
                                            torch.tensor([0, 1])),
     r"models: their numbers of classes differ \(a: 3, b: 5\); transfer needs classifiers of the same classes"),
    (lambda net: transfer.noise_comparison({"a": net}, X, {"b": X}),
     r"adversarial\['b'\]: no model of that name; models: 'a'"),
    (lambda net: transfer.noise_comparison({"a": net}, X, {}), "adversarial: expected a non-empty dict"),
    (lambda net: transfer.noise_comparison({"a": net}, X, {"a": X * 3}),
     r"adversarial\['a'\]: values must lie in \[0.0, 1.0\]"),
])
def test_transfer_arguments_of_the_wrong_kind(net, call, message):
    """Were an IndexError, range()'s ValueError, a dtype RuntimeError, TypeErrors, an AttributeError, a KeyError,
    torch.stack's RuntimeError, and (out-of-box adversarial images) a silent answer."""
    with pytest.raises(IntriguingError, match=message):
        call(net)


def relu_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.mark.parametrize("kwargs, message", [
    ({"upper": -torch.ones(2)}, r"upper: expected non-negative RMS distortions \(NaN where none\), got -1"),
    ({"upper": "a"}, "upper: expected a tensor of RMS distortions, one per input, got str"),
    ({"steps": -1}, "steps: expected an integer >= 0, got -1"),
    ({"steps": 2.5}, "steps: expected an integer >= 0, got 2.5"),
])
def test_certified_lower_bound_arguments(kwargs, message):
    """A negative ``upper`` gave negative 'certified lower bounds'; the others were TypeErrors."""
    with pytest.raises(IntriguingError, match=message):
        oracles.certified_lower_bound(relu_net(), X, torch.tensor([1, 2]), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"margin": -1.0}, r"margin: expected a finite number >= 0 \(logits by which the target must win\), got -1.0"),
    ({"margin": float("nan")}, "margin: expected a finite number >= 0"),
    ({"gap": -1.0}, r"gap: expected a finite number >= 0 \(relative\), got -1.0"),
    ({"time_limit": float("nan")}, r"time_limit: expected a number of seconds > 0 \(inf: no limit\), got nan"),
    ({"time_limit": -1.0}, "time_limit: expected a number of seconds > 0"),
    ({"upper": -torch.ones(2)}, "upper: expected non-negative RMS distortions"),
    ({"start": X[:1]}, r"start: expected the shape of x \(2, 1, 4, 4\), got \(1, 1, 4, 4\)"),
])
def test_exact_minimal_distortion_arguments(kwargs, message):
    """A negative margin reported distortion 0 (x itself 'reached' the target) and a negative upper NaN,
    both silently; a NaN time limit or gap was taken; a start of another shape was a RuntimeError."""
    with pytest.raises(IntriguingError, match=message):
        oracles.exact_minimal_distortion(relu_net(), X, torch.tensor([1, 2]), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": -5}, r"limit: expected an integer >= 1 \(the first images of the split\) or None, got -5"),
    ({"limit": 2.5}, r"limit: expected an integer >= 1 \(the first images of the split\) or None, got 2.5"),
    ({"seed": 2.5}, "seed: expected an integer, got 2.5"),
    ({"seed": 2**70}, r"seed: 1180591620717411303424 is too large; expected an integer of at most 2\*\*63 - 1"),
])
def test_zoo_training_arguments(kwargs, message, tmp_path, monkeypatch):
    """A bug: ``limit=-5`` trained on all images but the last five, silently (a slice); 2.5 and a float seed were
    TypeError / RuntimeError, 2**70 an overflow ValueError."""
    monkeypatch.setattr(zoo, "fit", lambda *a, **k: pytest.fail("training started before the check"))
    with pytest.raises(IntriguingError, match=message):
        zoo.trained("FC10(1e-4)", cache=tmp_path, progress=False, **kwargs)


@pytest.mark.parametrize("call, message", [
    (lambda net: spectral.spectral_table(net, (1, 4, 4), seed=2.5), "seed: expected an integer, got 2.5"),
    (lambda net: spectral.spectral_table(net, (1, 4, 4), images=torch.rand(3, 1, 5, 5)),
     r"images: the model cannot take inputs shaped \(1, 1, 5, 5\) \(mat1 and mat2 shapes"),
    (lambda net: spectral.spectral_table(net, (1, 4, 4), images=X.double()),
     r"images: expected dtype torch.float32 \(the model's parameters\), got torch.float64"),
    (lambda net: spectral.spectral_table(net, (1, 4, 4), pairs=X),
     r"pairs: expected a pair \(x, x_other\) of tensors, got Tensor"),
    (lambda net: spectral.spectral_table(net, (1, 4, 4), pairs=(X, X, X)),
     r"pairs: expected a pair \(x, x_other\) of tensors, got tuple of 3"),
    (lambda net: spectral.spectral_table(lambda x: x, (1, 4, 4)),
     "model: expected a torch.nn.Module, got function"),
])
def test_spectral_table_arguments(net, call, message):
    """Were a RuntimeError (float seed), shape and dtype RuntimeErrors from the model, TypeErrors and an
    AttributeError."""
    with pytest.raises(IntriguingError, match=message):
        call(net)


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 2.5}, "k: expected an integer >= 1, got 2.5"),
    ({"directions": 2.5}, "directions: expected an integer >= 1, got 2.5"),
    ({"seed": 2.5}, "seed: expected an integer, got 2.5"),
])
def test_units_analyse_arguments(net, kwargs, message):
    """Were TypeErrors from torch.topk, numpy and range."""
    from intriguing.units import analyse

    images, labels = torch.rand(20, 1, 4, 4), torch.arange(20) % 3
    with pytest.raises(IntriguingError, match=message):
        analyse(net, "1", images, labels, **{"k": 2, "directions": 3, **kwargs})


@pytest.mark.parametrize("model, source, message", [
    ("net", {"1.weight": [1.0]}, r"state dict: expected parameter name -> tensor, got list for '1.weight'"),
    ("str", "w.safetensors", "model: expected a torch.nn.Module to load the weights into, got str"),
    ("net", 3, r"weights: expected a path to a .safetensors file or a state dict, got int"),
    ("net", None, r"weights: expected a path to a .safetensors file or a state dict, got NoneType"),
])
def test_load_weights_arguments(net, model, source, message):
    """Were AttributeErrors and TypeErrors."""
    from intriguing.checkpoint import load_weights

    with pytest.raises(IntriguingError, match=message):
        load_weights(net if model == "net" else "model", source)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "FC100-100"}, "unknown model 'FC100-100': did you mean"),
    ({"layers": ("input", "h7")}, r"layer 'h7': expected 'input' or a hidden sigmoid layer of the model \(h1, h2\)"),
    ({"limit": 0}, r"limit: expected an integer >= 1 \(the first images of the split\) or None, got 0"),
    ({"eval_examples": 2.5}, "eval_examples: expected an integer >= 1, got 2.5"),
    ({"seeds": (0, 0)}, r"seeds: each seed may appear once, got \(0, 0\)"),
])
def test_adversarial_training_study_config_is_checked_when_made(kwargs, message):
    """A bug: a misspelt model or layer, ``limit=0`` and duplicate seeds were accepted, and failed (or doubled
    the work) only when the study ran, after the baselines had trained."""
    from intriguing.advtrain import AdvTrainStudyConfig

    with pytest.raises(IntriguingError, match=message):
        AdvTrainStudyConfig(**kwargs)


def test_checking_an_adversarial_training_config_draws_no_random_numbers():
    """Checking the model's layers builds it; unseeded, that drew its initial weights from torch's global
    generator, so making a config changed a user's next random numbers."""
    from intriguing.advtrain import AdvTrainStudyConfig

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    AdvTrainStudyConfig(layers=("input", "h1"))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": -1}, "epochs: expected an integer >= 0, got -1"),
    ({"epochs": 1.5}, "epochs: expected an integer >= 0, got 1.5"),
    ({"batch_size": 0}, "batch_size: expected an integer >= 1, got 0"),
    ({"lr": float("nan")}, "lr: expected a finite learning rate > 0, got nan"),
    ({"lr": -1.0}, "lr: expected a finite learning rate > 0, got -1.0"),
    ({"weight_decay": {"out": -1.0}}, r"weight_decay\['out'\]: expected a finite number >= 0, got -1.0"),
    ({"sparsity_weight": float("nan")}, "sparsity_weight: expected a finite number >= 0, got nan"),
    ({"frozen": ("nope",)}, r"frozen names layers \['nope'\] that the model lacks"),
])
def test_recipe_overrides_are_checked_before_training(overrides, message, tmp_path, monkeypatch):
    """A bug: epochs=-1 'trained' for no epoch and cached the untrained net silently, a negative weight decay
    trained silently; the others were a TypeError, ZeroDivisionError, UnboundLocalError, torch's ValueError,
    a KeyError."""
    monkeypatch.setattr(training, "run_epochs", lambda *a, **k: pytest.fail("training started before the check"))
    with pytest.raises(IntriguingError, match=message):
        zoo.trained("FC10(1e-4)", limit=50, overrides=overrides, cache=tmp_path, progress=False)


def test_an_unknown_lipsdp_solver_option_is_one_line():
    """Was the solver's TypeError ('Clarabel: unrecognized solver setting')."""
    pytest.importorskip("cvxpy")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(IntriguingError, match=r"solver options \{'bogus': 1\}: CLARABEL does not take them \("):
        oracles.lipsdp(model, bogus=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": "input"}, r"layers: expected a tuple of layer names such as \('input', 'h1'\), got 'input'"),
    ({"pool_size": 2.5}, "pool_size: expected an integer >= 1, got 2.5"),
    ({"pool_size": "5"}, "pool_size: expected an integer >= 1, got '5'"),
])
def test_adversarial_training_config_fields(kwargs, message):
    """A string of layers was taken letter by letter, 2.5 accepted, '5' a TypeError."""
    from intriguing.advtrain import AdvTrainConfig

    with pytest.raises(IntriguingError, match=message):
        AdvTrainConfig(**kwargs)


def test_bounds_given_as_a_string_are_refused():
    """A bug: ``bounds="01"`` was read character by character as the box (0, 1)."""
    from intriguing.attacks import LBFGSConfig

    with pytest.raises(IntriguingError, match="bounds: expected a pair"):
        LBFGSConfig(bounds="01")


def test_random_targets_for_a_one_class_model_is_one_line():
    """A target must differ from the label (Section 4.1): a one-output model has no such class."""
    from intriguing.seeding import random_targets
    with pytest.raises(IntriguingError, match="at least 2 classes"):
        random_targets(torch.zeros(3, dtype=torch.long), 1, seed=0)
