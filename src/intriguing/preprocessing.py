"""Preprocessing as part of the model, so that every attack works on pixels in the box [0, 1].

The paper measures distortion on the images themselves (Section 4.1, Fig. 5). A network trained on
normalised, resized inputs is therefore wrapped: :class:`Preprocessed` takes pixels in [0, 1] of any
size and does the resizing and the ``(x - mean) / std`` inside ``forward``, differentiably, so the
gradients an attack follows and the distortion it minimises both live in pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import torch
from torch import nn
from torch.nn import functional as F

from intriguing.errors import IntriguingError


class Preprocessed(nn.Module):
    """A network behind its preprocessing: pixels in [0, 1], any size, in; the network's logits out.

    ``forward`` resizes the shorter side to ``resize`` and centre-crops to ``crop`` (both optional),
    resizes to ``size`` if the result still differs, then normalises with ``mean`` / ``std``. All of
    it is differentiable, so gradients (and the attack's distortion) live in pixel space. The wrapped
    module is ``.network``: hooks for the unit analysis go there, with the layer names you gave it.
    """

    def __init__(self, network: nn.Module, size: tuple[int, int], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, resize: int | None = None, crop: tuple[int, int] | None = None):
        super().__init__()
        self.network = network
        self.size = tuple(size)
        self.resize = resize
        self.crop = tuple(crop) if crop is not None else None
        self.register_buffer("mean", channel_vector(mean, "mean"), persistent=False)
        self.register_buffer("std", channel_vector(std, "std"), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(x))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """What the network sees for pixels ``x``: analyses that hook the network's layers (Section 3's
        units) feed it this, while attacks go through ``forward`` and stay in pixel space."""
        if x.dim() != 4:
            raise IntriguingError(f"model input: expected images shaped (N, C, H, W), got {tuple(x.shape)}")
        if self.resize is not None:
            h, w = x.shape[-2:]
            scale = self.resize / min(h, w)
            x = resample(x, (max(1, round(h * scale)), max(1, round(w * scale))))
        if self.crop is not None:
            x = _center_crop(x, self.crop)
        if tuple(x.shape[-2:]) != self.size:
            x = resample(x, self.size)
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x

    def extra_repr(self) -> str:
        parts = [f"size={self.size}"]
        parts += [f"resize={self.resize}"] if self.resize is not None else []
        parts += [f"crop={self.crop}"] if self.crop is not None else []
        parts += [f"{k}={getattr(self, k).flatten().tolist()}" for k in ("mean", "std") if getattr(self, k) is not None]
        return ", ".join(parts)


def channel_vector(values: Sequence[float] | None, name: str) -> torch.Tensor | None:
    """``values`` as a (C, 1, 1) float tensor that broadcasts over a batch of images."""
    if values is None:
        return None
    values = [values] if isinstance(values, Real) else values  # one number for every channel
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError(values)
        vector = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise IntriguingError(f"{name}: expected one finite number per channel, got {values!r}") from None
    if vector.dim() != 1 or len(vector) == 0 or not torch.isfinite(vector).all():
        raise IntriguingError(f"{name}: expected one finite number per channel, got {list(values)}")
    if name == "std" and (vector <= 0).any():
        raise IntriguingError(f"std: expected positive numbers, got {vector.tolist()}")
    return vector.view(-1, 1, 1)


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W), antialiased when shrinking (as image libraries do); differentiable."""
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def centre_region(height: int, width: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the largest central region of a ``height`` x ``width`` image with
    the aspect ratio of ``target`` (H, W): what is resized to ``target`` when an image is fitted by cropping,
    as ImageNet evaluation does, rather than squashed (which distorts every object in it)."""
    if height * target[1] > width * target[0]:  # taller than the target: crop top and bottom
        kept = max(1, round(width * target[0] / target[1]))
        return (height - kept) // 2, 0, kept, width
    kept = max(1, round(height * target[1] / target[0]))
    return 0, (width - kept) // 2, height, kept


def centre_cropped(x: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
    """The :func:`centre_region` of (..., H, W) ``x`` with ``target``'s aspect ratio (a view)."""
    top, left, height, width = centre_region(*x.shape[-2:], target)
    return x[..., top:top + height, left:left + width]


def _center_crop(x: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    if crop[0] > h or crop[1] > w:
        raise IntriguingError(
            f"crop {crop} is larger than the (resized) image {(h, w)}; make --resize at least the crop"
        )
    top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
    return x[..., top:top + crop[0], left:left + crop[1]]


def size_pair(value: int | Sequence[int] | None, name: str) -> tuple[int, int] | None:
    """``value`` (a number or ``(height, width)``) as a pair of positive ints; ``None`` stays ``None``."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, (Real, str, bytes)) else tuple(value)
    if len(pair) != 2 or not all(_is_positive_int(v) for v in pair):
        raise IntriguingError(f"{name}: expected a positive size or (height, width), got {value!r}")
    return int(pair[0]), int(pair[1])


def positive_int(value: int | None, name: str) -> int | None:
    """``value`` as a positive int (numpy ints included; a float or a bool is an error); ``None`` stays."""
    if value is not None and not _is_positive_int(value):
        raise IntriguingError(f"{name}: expected a positive whole number of pixels, got {value!r}")
    return None if value is None else int(value)


def _is_positive_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value > 0
