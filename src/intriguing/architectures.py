"""The paper's MNIST architectures (Section 4.2, Tables 1 and 3, and the unit analysis's ConvNet).

Each maps images (N, 1, 28, 28) in [0, 1] to logits (N, 10). Hidden layers are named modules so that
hooks (unit analysis), layer walks (spectral bounds) and per-layer adversarial training can address
them: in the fully connected nets ``h1`` and ``h2`` are the hidden activations, ``out`` the logit layer.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

NUM_CLASSES = 10
INPUT_SHAPE = (1, 28, 28)
PIXELS = 28 * 28


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

    Two 5x5 conv + 2x2 max-pool + ReLU stages, then a 128-unit ReLU feature layer ``features``
    (the "last feature layer" whose units Section 3 examines) and the logit layer ``out``.

    Each stage pools before its ReLU: ReLU is monotone, so ``relu(max(a)) = max(relu(a))`` and the
    function, its gradients and every trained weight are bit for bit those of conv, ReLU, pool, while
    the ReLU and its backward pass touch a quarter of the values (a training step 16% faster, issue 14).
    """
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, 5, padding=2),
            pool1=nn.MaxPool2d(2),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(16, 32, 5, padding=2),
            pool2=nn.MaxPool2d(2),
            relu2=nn.ReLU(),
            flatten=nn.Flatten(),
            fc1=nn.Linear(32 * 7 * 7, 128),
            features=nn.ReLU(),
            out=nn.Linear(128, classes),
        )
    )
