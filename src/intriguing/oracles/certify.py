"""Certified lower bounds on the minimal adversarial distortion, from linear bound propagation.

Szegedy et al. (2014, Sec. 4.1, Eq. 1) define the minimal distortion ``D(x, t)`` as the smallest
``||r||_2`` with ``x + r`` in the box and classified as ``t``; an attack only ever finds an upper
bound. If CROWN (Zhang et al. 2018) proves that some class beats ``t`` everywhere in the L2 ball of
radius ``eps`` around ``x`` (inside the box), then ``D(x, t) > eps``. Bisection on ``eps`` between 0
and the attack's distortion gives the largest radius that bound propagation can certify, so that

    certified lower  <=  exact minimum (:mod:`~intriguing.oracles.mip`)  <=  attack's distortion.

Works for ReLU and sigmoid chains (:func:`~intriguing.chains.chain_of`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from intriguing.errors import IntriguingError, check_count, check_images, check_labels
from intriguing.chains import Chain, chain_of, flat_inputs
from intriguing.oracles.propagation import Domain, layer_bounds, margin_lower_bounds


def certified_radius(chain: Chain, x0: torch.Tensor, target: int, upper_l2: float, *, steps: int = 20,
                     method: str = "linear", bounds: tuple[float, float] = (0.0, 1.0)) -> float:
    """The largest L2 radius in ``[0, upper_l2]`` (to ``upper_l2 / 2**steps``) where ``target`` provably cannot win.

    ``x0`` is one flat float64 input (m,). Returns 0 when the model already classifies ``x0`` as
    ``target`` (or when nothing can be certified).
    """
    logits = chain.logits(x0[None])[0]
    if logits[target] >= logits.max():
        return 0.0
    lo, hi = 0.0, float(upper_l2)
    if _certified(chain, x0, target, hi, method, bounds):
        return hi  # nothing in the ball: the caller's upper bound was not attained
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _certified(chain, x0, target, mid, method, bounds) else (lo, mid)
    return lo


def _certified(chain: Chain, x0: torch.Tensor, target: int, radius: float, method: str, bounds) -> bool:
    """True if some class provably beats ``target`` on the whole ball of ``radius`` (inside the box)."""
    domain = Domain.l2(x0, radius, bounds)
    hidden = layer_bounds(chain, domain, method)
    return bool((margin_lower_bounds(chain, target, hidden, domain) > 0).any())


def certified_lower_bound(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                          upper: torch.Tensor | None = None, steps: int = 20, method: str = "linear",
                          bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Certified lower bounds on the minimal targeted distortion, as the paper's RMS (N,).

    ``model``: an ``nn.Sequential`` of Flatten/Linear/ReLU/Sigmoid; ``x``: (N, ...) inside ``bounds``;
    ``target``: (N,) int64. ``upper`` (N,): known RMS distortions of adversarial examples (e.g. an
    :class:`~intriguing.attacks.AttackResult`'s ``distortion``); the bisection searches ``[0, upper]``.
    Without it, or where it is NaN (a failed attack), it searches up to the whole box. Multiply by
    ``sqrt(m)`` for the L2 norm. ``steps`` bisection steps give a bound within ``upper / 2**steps``
    of the largest certifiable radius. Example::

        result = LBFGS()(model, x, target=t)
        lower = certified_lower_bound(model, x, t, upper=result.distortion)  # lower <= result.distortion
    """
    check_images(x, "x", bounds)
    check_count("steps", steps, smallest=0)
    chain = chain_of(model)
    flat = flat_inputs(chain, x)
    check_labels(target, "target", len(x), chain.num_classes)
    targets = target.cpu()
    m = flat.shape[1]
    caps = _upper_l2(flat, upper, bounds)
    radii = [certified_radius(chain, flat[i], int(targets[i]), caps[i], steps=steps, method=method, bounds=bounds)
             for i in range(len(flat))]
    return torch.tensor(radii, dtype=torch.float64) / math.sqrt(m)


def _upper_l2(flat: torch.Tensor, upper: torch.Tensor | None, bounds: tuple[float, float]) -> list[float]:
    """Per-example L2 search caps: ``upper`` (RMS) times ``sqrt(m)``, or the farthest point of the box."""
    whole = torch.maximum(flat - bounds[0], bounds[1] - flat).norm(dim=1)
    if upper is None:
        return whole.tolist()
    try:
        upper = torch.as_tensor(upper, dtype=torch.float64).cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise IntriguingError(f"upper: expected a tensor of RMS distortions, one per input, "
                              f"got {type(upper).__name__}") from None
    if len(upper) != len(flat):
        raise IntriguingError(f"upper: expected shape ({len(flat)},), got {tuple(upper.shape)}")
    if (upper < 0).any():  # a negative radius would come back as a negative "certified" bound
        raise IntriguingError(f"upper: expected non-negative RMS distortions (NaN where none), got "
                              f"{float(upper.min()):g}; pass an attack's AttackResult.distortion")
    cap = upper * math.sqrt(flat.shape[1])
    return torch.where(torch.isnan(cap), whole, torch.minimum(cap, whole)).tolist()

