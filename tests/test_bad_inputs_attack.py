"""Bad input to the attacks: each mistake gets one clear line (what, where, how to fix), never a
torch traceback and never a silently wrong answer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from intriguing.attacks import LBFGS, Targeted, exact_linear
from intriguing.errors import IntriguingError


def mnist_mlp() -> nn.Module:
    """An MNIST-shaped sigmoid network (784 inputs), small enough to attack in milliseconds."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Sigmoid(), nn.Linear(16, 10)).eval()


def mnist_conv() -> nn.Module:
    """An MNIST-shaped conv net: (N, 1, 28, 28) -> conv, pool -> 4 x 14 x 14 features -> 10 logits."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 14 * 14, 10)).eval()


def images(n: int, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


def error_of(call) -> str:
    with pytest.raises(IntriguingError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message, "one line"
    return message


def test_a_target_equal_to_the_true_label_is_refused_with_the_examples_named():
    model = mnist_mlp()
    x = images(6, 1, 28, 28)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    targets = torch.tensor([1, 1, 3, 3, 5, 6])  # examples 1 and 3 aim at their own label
    message = error_of(lambda: LBFGS()(model, x, target=targets, labels=labels))
    assert message.startswith("target/labels: 2 of 6 targets equal their true label (examples 1, 3);")
    assert "random_targets" in message and "labels= alone" in message
    assert error_of(lambda: LBFGS()(model, x, Targeted(targets, labels=labels))) == message
    # The same check with many offenders lists the first five.
    many = error_of(lambda: LBFGS()(model, x, target=labels, labels=labels))
    assert many.startswith("target/labels: 6 of 6 targets equal their true label (examples 0, 1, 2, 3, 4, ...)")


def test_true_labels_passed_as_targets_get_a_warning():
    model = mnist_mlp()
    x = images(6, 1, 28, 28)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    with pytest.warns(UserWarning, match="6 of 6 targets are already the model's class"):
        LBFGS(refine=False, max_solves=2)(model, x, target=predicted)


def test_a_model_returning_probabilities_is_refused():
    model = nn.Sequential(mnist_mlp(), nn.Softmax(dim=1)).eval()
    x = images(3, 1, 28, 28)
    message = error_of(lambda: LBFGS()(model, x, labels=torch.zeros(3, dtype=torch.int64)))
    assert message == (
        "model: its outputs look like probabilities (non-negative rows summing to 1, shape (3, 10)), but the "
        "attack's loss needs logits; remove the final softmax (or return log-probabilities)"
    )
    # Log-probabilities are logits up to a constant per row: accepted.
    log_model = nn.Sequential(mnist_mlp(), nn.LogSoftmax(dim=1)).eval()
    result = LBFGS(refine=False, max_solves=2)(log_model, x, labels=torch.zeros(3, dtype=torch.int64))
    assert result.success.dtype == torch.bool


def test_float64_inputs_name_the_expected_dtype():
    x = images(2, 1, 28, 28).double()
    message = error_of(lambda: LBFGS()(mnist_mlp(), x, labels=torch.zeros(2, dtype=torch.int64)))
    assert message == ("x: expected dtype torch.float32 (the model's parameters), got torch.float64; convert the "
                       "inputs with x.to(torch.float32) (or the model with model.to(torch.float64))")


@pytest.mark.parametrize("make_model, shape, expected", [
    (mnist_mlp, (2, 1, 32, 32), "its first layer, Linear(784 -> 16), expects 784 values per example"),
    (mnist_conv, (2, 784), "its first layer, Conv2d(1 -> 4), expects inputs shaped (N, 1, H, W)"),
    (mnist_conv, (2, 1, 32, 32),
     "its first layer, Conv2d(1 -> 4), expects inputs shaped (N, 1, H, W) at the image size"),
])
def test_inputs_that_do_not_fit_the_model_name_both_shapes(make_model, shape, expected):
    x = images(*shape)
    for call in (lambda: LBFGS()(make_model(), x, labels=torch.zeros(2, dtype=torch.int64)),
                 lambda: exact_linear(make_model(), x, torch.zeros(2, dtype=torch.int64))):
        message = error_of(call)
        assert message.startswith(f"x: the model cannot take inputs shaped {shape} (")
        assert expected in message


def test_inputs_that_require_grad_are_attacked_without_a_warning():
    """A bug: checking the range of such inputs warned 'Converting a tensor with requires_grad=True to a scalar'."""
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(4, 1, 4, 4).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = LBFGS()(model, x, target=torch.tensor([1, 0, 0, 0]))
    assert result.success_rate == 1.0


@pytest.mark.parametrize("field", ["batch_size", "max_solves", "memory"])
def test_a_count_too_large_for_torch_is_refused(field):
    """A bug: ``attack --batch-size 99999999999999999999999`` ended in torch's 'Overflow when unpacking long long'."""
    from intriguing.attacks import LBFGSConfig

    huge = 10**23
    assert error_of(lambda: LBFGSConfig(**{field: huge})) == (
        f"{field}: {huge} is too large; expected an integer from 1 to 2**63 - 1")
    assert LBFGSConfig(**{field: __import__("numpy").int64(3)}).to_dict()[field] == 3  # numpy integers are counts


def test_a_model_that_raises_value_error_on_the_input_is_one_line():
    """A bug: batch norm in train mode on a batch of one raised torch's ValueError ('Expected more than 1 value
    per channel when training') as a traceback; the train-mode warning came first, the error said nothing of it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).train()
    with pytest.warns(UserWarning, match="train mode"):
        message = error_of(lambda: LBFGS()(model, torch.rand(1, 1, 4, 4), target=torch.tensor([1])))
    assert message.startswith("x: the model cannot take inputs shaped (1, 1, 4, 4) (Expected more than 1 value per "
                              "channel when training")
    assert message.endswith("; or, as the model is in train mode, call model.eval() first")
