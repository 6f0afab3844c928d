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

from intriguing.attacks.base import check_bounds, rms_distortion
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
