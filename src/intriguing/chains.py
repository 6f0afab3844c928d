"""A model as a chain of affine maps and elementwise activations: the form every oracle reasons about,
and the attack's local search over linear regions (:mod:`intriguing.attacks.regions`) too.

Bound propagation (CROWN, Zhang et al. 2018), the big-M mixed-integer program (Tjeng et al. 2019)
and LipSDP (Fazlyab et al. 2019) all need the network written as

    z_0 = W_0 x + b_0,   z_k = W_k phi_{k-1}(z_{k-1}) + b_k,   logits = z_{L-1},

with explicit float64 weights. :func:`chain_of` reads this form from an ``nn.Sequential`` of
``Flatten``, ``Linear`` and activation modules (nested ``Sequential``, ``Identity`` and ``Dropout``
are transparent) and refuses anything else with one clear message.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from intriguing.errors import IntriguingError

# Activation modules the oracles understand, with their slope range [alpha, beta] (Fazlyab et al. 2019,
# Sec. 2.2): every activation is monotone with slopes between alpha and beta.
SLOPES = {"relu": (0.0, 1.0), "sigmoid": (0.0, 0.25)}
_ACTIVATIONS = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid"}
_TRANSPARENT = (nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class Chain:
    """``L`` affine layers with an activation between consecutive ones (float64, CPU).

    ``weights[k]`` is ``(n_{k+1}, n_k)``, ``biases[k]`` is ``(n_{k+1},)``, ``activations[k]`` (one of
    :data:`SLOPES`) follows layer ``k``, so ``len(activations) == len(weights) - 1``.
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    activations: tuple[str, ...]

    @property
    def input_size(self) -> int:
        return self.weights[0].shape[1]

    @property
    def num_classes(self) -> int:
        return self.weights[-1].shape[0]

    def pre_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every ``z_k`` for flat float64 inputs ``x`` (N, m); the last entry is the logits."""
        out, h = [], x.double()
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = h @ w.T + b
            out.append(z)
            if k < len(self.activations):
                h = activate(self.activations[k], z)
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits (N, K) in float64 for flat inputs (N, m)."""
        return self.pre_activations(x)[-1]


def activate(kind: str, z: torch.Tensor) -> torch.Tensor:
    """Apply activation ``kind`` elementwise."""
    return torch.relu(z) if kind == "relu" else torch.sigmoid(z)


def _modules(model: nn.Module) -> list[nn.Module]:
    """The leaf modules of a (nested) ``nn.Sequential``, in order."""
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _modules(child)]
    return [model]


def _refuse(where: str, why: str, allowed: tuple[str, ...]) -> IntriguingError:
    modules = "/".join(module.__name__ for module, name in _ACTIVATIONS.items() if name in allowed)
    example = "FC20-20-10(ReLU)" if allowed == ("relu",) else "fully connected nets"
    return IntriguingError(
        f"model: {where} {why}; the oracles need an nn.Sequential of Flatten, Linear and {modules} modules "
        f"(e.g. intriguing.zoo's {example})"
    )


def chain_of(model: nn.Module, allowed: tuple[str, ...] = ("relu", "sigmoid")) -> Chain:
    """The :class:`Chain` computing ``model`` on flattened inputs, or an :class:`IntriguingError`.

    Consecutive ``Linear`` layers are multiplied into one; a trailing activation gets an identity
    layer after it, so the chain always ends with the logits.
    """
    if not isinstance(model, nn.Sequential):
        raise _refuse(f"{type(model).__name__} is not an nn.Sequential:", "its layer order is unknown", allowed)
    weights: list[torch.Tensor] = []
    biases: list[torch.Tensor] = []
    activations: list[str] = []
    last = None  # "linear" or "activation"
    for i, module in enumerate(_modules(model)):
        where = f"layer {i} ({type(module).__name__})"
        if isinstance(module, _TRANSPARENT):
            continue
        if isinstance(module, nn.Flatten):
            if last is not None:
                raise _refuse(where, "comes after a Linear layer", allowed)
        elif isinstance(module, nn.Linear):
            w = module.weight.detach().double().cpu()
            b = module.bias.detach().double().cpu() if module.bias is not None else torch.zeros(w.shape[0]).double()
            if last == "linear":  # compose: W2 (W1 h + b1) + b2
                weights[-1], biases[-1] = w @ weights[-1], w @ biases[-1] + b
            else:
                weights.append(w)
                biases.append(b)
            last = "linear"
        elif type(module) in _ACTIVATIONS and _ACTIVATIONS[type(module)] in allowed:
            if last != "linear":
                raise _refuse(where, "does not follow a Linear layer", allowed)
            activations.append(_ACTIVATIONS[type(module)])
            last = "activation"
        else:
            raise _refuse(where, f"is not supported here (supported activations: {', '.join(allowed)})", allowed)
    if not weights:
        raise _refuse("the network", "has no Linear layer", allowed)
    if last == "activation":
        n = weights[-1].shape[0]
        weights.append(torch.eye(n, dtype=torch.float64))
        biases.append(torch.zeros(n, dtype=torch.float64))
    for p in weights + biases:
        if not torch.isfinite(p).all():
            raise IntriguingError("model: a parameter contains NaN or infinite values; retrain or reload it")
    return Chain(tuple(weights), tuple(biases), tuple(activations))


def flat_inputs(chain: Chain, x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, ...) flattened to float64 (N, m) after checking its size matches the first layer."""
    flat = x.detach().double().cpu().reshape(len(x), -1)
    if flat.shape[1] != chain.input_size:
        raise IntriguingError(
            f"x: expected {chain.input_size} values per example to match the model's first layer, "
            f"got shape {tuple(x.shape)}"
        )
    return flat
