"""The paper's MNIST models, registered by the paper's names (Section 4.2, Tables 1 and 3).

``build(name)`` gives an untrained ``nn.Module`` that maps images (N, 1, 28, 28) in [0, 1] to logits
(N, 10); ``trained(name, on, seed)`` trains it (or loads it from the cache). Hidden layers are named
modules so that hooks (unit analysis), layer walks (spectral bounds) and per-layer adversarial
training can address them: in the fully connected nets ``h1`` and ``h2`` are the sigmoid outputs,
``out`` the logit layer.

Weight decay is the paper's per-layer lambda, applied as the penalty ``lambda * ||W||^2`` on each
named layer's weight, added to the mean cross-entropy (see ``TrainRecipe``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from intriguing.errors import unknown_name_error

NUM_CLASSES = 10
INPUT_SHAPE = (1, 28, 28)
PIXELS = 28 * 28


@dataclass(frozen=True)
class TrainRecipe:
    """How a zoo model is trained: every field enters the checkpoint cache key.

    ``weight_decay`` maps a module name to the paper's lambda for that layer's weight. For models
    with an unsupervised stage (the autoencoder) the ``pretrain_*`` fields describe that stage,
    after which the modules in ``frozen`` stop learning.
    """

    epochs: int
    weight_decay: dict[str, float]
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    pretrain_epochs: int = 0
    pretrain_weight_decay: dict[str, float] = field(default_factory=dict)
    sparsity_target: float = 0.05
    sparsity_weight: float = 0.0
    frozen: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its paper name, what it is, how to build it and how to train it."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    recipe: TrainRecipe


def fully_connected(*widths: int, activation: type[nn.Module] = nn.Sigmoid) -> nn.Sequential:
    """``FC w1-w2-...-10``: flatten, then Linear + activation per hidden width, then the logit layer.

    Modules are named ``fc{i}`` (weights) and ``h{i}`` (hidden activations), the logit layer ``out``.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    fan_in = PIXELS
    for i, width in enumerate(widths[:-1], start=1):
        layers[f"fc{i}"] = nn.Linear(fan_in, width)
        layers[f"h{i}"] = activation()
        fan_in = width
    layers["out"] = nn.Linear(fan_in, widths[-1])
    return nn.Sequential(layers)


class AutoencoderClassifier(nn.Module):
    """``AE400-10``: a sparse sigmoid autoencoder's code (400 units) with a softmax on top.

    The encoder is trained unsupervised first (reconstruction + KL sparsity, :meth:`unsupervised_loss`),
    then frozen; only ``out`` learns from labels, as in the paper's Table 1. The decoder is not part
    of :meth:`forward`: it only serves the unsupervised stage.
    """

    def __init__(self, hidden: int = 400, classes: int = NUM_CLASSES):
        super().__init__()
        self.flatten = nn.Flatten()
        self.encoder = nn.Linear(PIXELS, hidden)
        self.h1 = nn.Sigmoid()
        self.out = nn.Linear(hidden, classes)
        self.decoder = nn.Linear(hidden, PIXELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.h1(self.encoder(self.flatten(x))))

    def unsupervised_loss(self, x: torch.Tensor, sparsity_target: float, sparsity_weight: float) -> torch.Tensor:
        """Reconstruction cross-entropy per pixel plus the KL sparsity penalty on mean code activity."""
        flat = x.flatten(1)
        code = torch.sigmoid(self.encoder(flat))
        recon = self.decoder(code)
        reconstruction = nn.functional.binary_cross_entropy_with_logits(recon, flat, reduction="sum") / len(x)
        rho, rho_hat = sparsity_target, code.mean(0).clamp(1e-6, 1 - 1e-6)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return reconstruction + sparsity_weight * kl.sum()


def conv_net(classes: int = NUM_CLASSES) -> nn.Sequential:
    """A small MNIST convolutional net (the paper used one for the unit analysis, Figs 1-2).

    Two 5x5 conv + ReLU + 2x2 max-pool stages, then a 128-unit ReLU feature layer ``features``
    (the "last feature layer" whose units Section 3 examines) and the logit layer ``out``.
    """
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, 5, padding=2),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(16, 32, 5, padding=2),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(32 * 7 * 7, 128),
            features=nn.ReLU(),
            out=nn.Linear(128, classes),
        )
    )


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model to the zoo under ``spec.name`` (a user's own models are welcome too)."""
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec`; an unknown name lists the close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name_error("model", name, _REGISTRY) from None


def build(name: str) -> nn.Module:
    """A freshly initialised (untrained) model returning logits."""
    return spec(name).build()


def trained(name: str, on: str = "train", seed: int = 0, **kwargs) -> nn.Module:
    """The model trained on split ``on`` with ``seed``, in eval mode; loaded from the cache when there.

    Keyword arguments (``limit``, ``overrides``, ``data_dir``, ``cache``, ``progress``) go to
    :func:`intriguing.training.trained`.
    """
    from intriguing.training import trained as train_or_load

    return train_or_load(name, on=on, seed=seed, **kwargs)


def _softmax_regression(lam_text: str) -> ModelSpec:
    lam = float(lam_text)
    return ModelSpec(
        name=f"FC10({lam_text})",
        description=f"Softmax regression with weight decay lambda={lam:g}",
        build=lambda: fully_connected(NUM_CLASSES),
        recipe=TrainRecipe(epochs=15, weight_decay={"out": lam}),
    )


def _sigmoid_net(h1: int, h2: int, epochs: int = 40) -> ModelSpec:
    return ModelSpec(
        name=f"FC{h1}-{h2}-10",
        description="Sigmoid network, lambda=1e-5, 1e-5, 1e-6",
        build=lambda: fully_connected(h1, h2, NUM_CLASSES),
        recipe=TrainRecipe(epochs=epochs, weight_decay={"fc1": 1e-5, "fc2": 1e-5, "out": 1e-6}),
    )


for _lam in ("1e-4", "1e-2", "1"):  # spelled as in the paper's Table 1
    register(_softmax_regression(_lam))
register(_sigmoid_net(100, 100))
register(_sigmoid_net(200, 200))
register(_sigmoid_net(123, 456))
register(
    ModelSpec(
        name="AE400-10",
        description="Sparse autoencoder (400 sigmoid units, frozen) with softmax, lambda=1e-6",
        build=AutoencoderClassifier,
        recipe=TrainRecipe(
            epochs=30,
            weight_decay={"out": 1e-6},
            lr=3e-3,
            pretrain_epochs=20,
            pretrain_weight_decay={"encoder": 3e-3, "decoder": 3e-3},
            sparsity_target=0.05,
            sparsity_weight=3.0,
            frozen=("encoder",),
        ),
    )
)
register(
    ModelSpec(
        name="ConvNet",
        description="Small convolutional net (2 conv + pool stages, 128 ReLU features) for the unit analysis",
        build=conv_net,
        recipe=TrainRecipe(epochs=6, weight_decay={"fc1": 1e-5, "out": 1e-5}),
    )
)
