"""The Python API given the wrong kinds of input: one clear IntriguingError, never a deep traceback.

Lists and numpy arrays where tensors are expected, empty batches, and models that reject the
input shape: each is named with what was expected and how to convert it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from intriguing import spectral, training, transfer, zoo
from intriguing.attacks import rms_distortion
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
