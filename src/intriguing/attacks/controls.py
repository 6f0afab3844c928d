"""Controls for the adversarial tables: random noise, and adversarial directions at a chosen size.

Table 2 and Table 4 (Section 4.2) compare adversarial examples with Gaussian noise of similar or
larger standard deviation, and Table 4's "amplified to stddev=0.1" rows keep each adversarial
perturbation's direction but rescale its RMS size. Both outputs are clipped to the box, as images
must stay images; clipping can only shrink a perturbation, so the realised RMS is at most ``stddev``
(measure it with :func:`~intriguing.attacks.rms_distortion` when it matters).
"""

from __future__ import annotations

import math

import torch

from intriguing.attacks.base import rms_distortion
from intriguing.attacks.config import check_bounds
from intriguing.errors import IntriguingError, check_images


def _check_stddev(stddev: float) -> float:
    if not isinstance(stddev, (int, float)) or not math.isfinite(stddev) or stddev < 0:
        raise IntriguingError(f"stddev: expected a finite number >= 0, got {stddev!r}")
    return float(stddev)


def gaussian_noise(x: torch.Tensor, stddev: float, seed: int, *, bounds=(0.0, 1.0)) -> torch.Tensor:
    """``x + N(0, stddev^2)`` per pixel, clipped to ``bounds`` (Table 2's and Table 4's noise rows).

    The draw depends only on ``seed`` and ``x``'s shape: same seed, same noise.
    """
    stddev = _check_stddev(stddev)
    low, high = check_bounds(bounds)
    check_images(x, "x", (low, high))
    generator = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + stddev * noise).clamp(low, high)


def rescale_perturbation(x: torch.Tensor, x_adv: torch.Tensor, stddev: float, *, bounds=(0.0, 1.0)) -> torch.Tensor:
    """``x + r * stddev / rms(r)`` with ``r = x_adv - x``, clipped to ``bounds`` (Table 4, "amplified").

    Rows where ``x_adv == x`` (no perturbation, e.g. a failed attack) have no direction to
    rescale and are returned unchanged.
    """
    stddev = _check_stddev(stddev)
    low, high = check_bounds(bounds)
    check_images(x, "x", (low, high))
    check_images(x_adv, "x_adv", (low, high))
    rms = rms_distortion(x, x_adv)
    scale = torch.where(rms > 0, stddev / rms.clamp_min(torch.finfo(rms.dtype).tiny), torch.zeros_like(rms))
    r = (x_adv - x) * scale.view(-1, *[1] * (x.dim() - 1))
    return (x + r).clamp(low, high)


def matched_rms(x: torch.Tensor, direction: torch.Tensor, rms: float, *, bounds=(0.0, 1.0),
                iterations: int = 60) -> torch.Tensor:
    """``clip(x + s * direction)`` with ``s >= 0`` chosen per example so that its realised RMS is ``rms``.

    Clipping to the box shrinks a perturbation, so noise of nominal stddev 0.1 has a realised RMS
    near 0.074 on MNIST (Section 4.2's tables compare by size, so the size must be the one stated).
    The realised RMS grows with ``s``, so a per-example bisection finds it; an example whose box
    cannot hold ``rms`` in that direction gets the largest size it can (a zero direction stays ``x``).
    """
    rms = _check_stddev(rms)
    low, high = check_bounds(bounds)
    check_images(x, "x", (low, high))
    shape = (-1, *[1] * (x.dim() - 1))

    def realised(scale: torch.Tensor) -> torch.Tensor:
        return rms_distortion(x, (x + scale.view(shape) * direction).clamp(low, high))

    top = torch.full((len(x),), max(rms, 1e-12), dtype=x.dtype, device=x.device)
    for _ in range(iterations):  # grow until the target is inside [0, top], or the box is saturated
        short = realised(top) < rms
        if not short.any() or top.max() > 1e6:
            break
        top = torch.where(short, 2 * top, top)
    bottom = torch.zeros_like(top)
    for _ in range(iterations):
        middle = (bottom + top) / 2
        below = realised(middle) < rms
        bottom, top = torch.where(below, middle, bottom), torch.where(below, top, middle)
    return (x + top.view(shape) * direction).clamp(low, high)


def matched_gaussian_noise(x: torch.Tensor, rms: float, seed: int, *, bounds=(0.0, 1.0)) -> torch.Tensor:
    """Gaussian noise (the draw of :func:`gaussian_noise` with ``seed``) scaled per example so that its
    realised RMS after clipping to ``bounds`` is ``rms`` (:func:`matched_rms`)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return matched_rms(x, noise, rms, bounds=bounds)
