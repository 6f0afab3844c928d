"""Where adversarial training cuts a network: the layers that can get a pool (Section 4.1).

The paper generated "adversarial examples for each layer outputs which were used to train all the
layers above". A sequential model cut after a hidden sigmoid layer ``h`` gives the layers below
(``model[:h+1]``, which make the outputs to perturb) and the layers above (``model[h+1:]``, which
the attack fools and the pool trains).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from intriguing.attacks import AttackResult
from intriguing.attacks.criteria import Criterion
from intriguing.errors import IntriguingError

INPUT = "input"


def hidden_layers(model: nn.Module) -> list[str]:
    """Names of the hidden sigmoid layers of a sequential model: the layers that can get a pool.

    Sigmoid outputs lie in (0, 1), so the attack's box for them is the same as for pixels.
    """
    if not isinstance(model, nn.Sequential):
        return []
    return [name for name, module in model.named_children() if isinstance(module, nn.Sigmoid)]


def split_at(model: nn.Module, layer: str) -> tuple[nn.Module, nn.Module]:
    """``(lower, upper)`` with ``upper(lower(x)) == model(x)``, cut after ``layer``.

    ``"input"`` cuts before the first module. Both halves share the model's modules, so training
    ``upper`` on a hidden layer's pool trains exactly "the layers above" that layer.
    """
    if layer == INPUT:
        return nn.Identity(), model
    known = hidden_layers(model)
    if layer not in known:
        raise IntriguingError(
            f"layer {layer!r}: expected 'input' or a hidden sigmoid layer of the model "
            f"({', '.join(known) or 'it has none: only --layers input applies'})"
        )
    cut = [name for name, _ in model.named_children()].index(layer) + 1
    # A slice is a new container, in train mode whatever its modules' mode: give it the model's.
    return model[:cut].train(model.training), model[cut:].train(model.training)


def output_classes(model: nn.Module, example: torch.Tensor) -> int:
    """How many classes ``model`` scores: the width of its logits for one example."""
    with torch.no_grad():
        return int(model(example[:1]).shape[1])


def attack_layer(model: nn.Module, layer: str, images: torch.Tensor, criterion: Criterion,
                 attack: Callable[..., AttackResult]) -> AttackResult:
    """Adversarial outputs of ``layer`` for ``images``: the attack on ``model[layer+1:]`` at ``model[:layer+1](x)``.

    ``criterion`` is :class:`~intriguing.attacks.Targeted` (aim at chosen classes) or
    :class:`~intriguing.attacks.Untargeted` (leave the true class); ``attack(model, x, criterion)``
    is e.g. :class:`~intriguing.attacks.LBFGS`. Call with the model in eval mode.
    """
    lower, upper = split_at(model, layer)
    with torch.no_grad():
        outputs = lower(images)
    return attack(upper, outputs, criterion)
