"""Lipschitz constants of elementwise activations: the largest absolute slope (Section 4.3).

An elementwise map ``y_i = phi(x_i)`` has Lipschitz constant ``sup |phi'|``, attained by moving one
entry where the slope is largest. The paper uses ReLU (1) and sigmoid (1/4); modern networks add
ReLU6 and hard tanh (1), Hardswish (3/2, just left of 3), Hardsigmoid (1/6), and smooth ones whose
largest slope has no closed form: SiLU (1.0998 at x = 2.3994), GELU (1.1289 at x = sqrt(2)) and Mish,
found here numerically to about 1e-12.
"""

from __future__ import annotations

import torch
from scipy.optimize import minimize_scalar
from torch import nn

from intriguing.spectral.bounds import BoundEstimate, constant, register_bound
from intriguing.spectral.graph import LayerCall
from intriguing.spectral.lanczos import NormSettings

register_bound(nn.ReLU, nn.Hardtanh)(constant(1.0, "max |slope| = 1"))  # nn.ReLU6 is a hard tanh
register_bound(nn.Tanh)(constant(1.0, "max derivative 1, at 0"))
register_bound(nn.Sigmoid)(constant(0.25, "max derivative 1/4, at 0"))
register_bound(nn.Softplus)(constant(1.0, "slope below 1, approaching it as x grows"))
register_bound(nn.Hardswish)(constant(1.5, "max slope 3/2 = (2x + 3)/6 as x -> 3"))
register_bound(nn.Hardsigmoid)(constant(1 / 6, "slope 1/6 on [-3, 3]"))


@register_bound(nn.LeakyReLU)
def _leaky_relu(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    slope = max(1.0, abs(call.module.negative_slope))
    return BoundEstimate(slope, slope, "max |slope|")


@register_bound(nn.ELU)
def _elu(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """Slope 1 for ``x > 0`` and ``alpha e^x`` below, approaching ``|alpha|`` at 0."""
    slope = max(1.0, abs(call.module.alpha))
    return BoundEstimate(slope, slope, "max(1, |alpha|)")


# The smooth activations are within 1e-6 of their asymptotes' slopes (0 and 1) beyond |x| = SPAN.
SPAN, GRID = 30.0, 600_001
_SLOPES: dict[tuple[type, str], tuple[float, float]] = {}


@register_bound(nn.SiLU, nn.GELU, nn.Mish)
def _smooth(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """The largest ``|phi'(x)|``: located on a fine grid, then refined by a bounded 1-D search."""
    key = (type(call.module), call.module.extra_repr())
    if key not in _SLOPES:
        _SLOPES[key] = max_slope(call.module)
    slope, where = _SLOPES[key]
    return BoundEstimate(slope, slope, f"max |slope| {slope:.6f}, at x = {where:.4f}")


def max_slope(activation: nn.Module) -> tuple[float, float]:
    """``(max |phi'(x)|, argmax)`` of an elementwise activation over ``[-SPAN, SPAN]`` (float64 autograd)."""
    x = torch.linspace(-SPAN, SPAN, GRID, dtype=torch.float64, requires_grad=True)
    (slopes,) = torch.autograd.grad(activation(x).sum(), x)
    x = x.detach()
    i = int(slopes.abs().argmax())
    step = 2 * SPAN / (GRID - 1)

    def negative_slope(t: float) -> float:
        point = torch.tensor([t], dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad(activation(point).sum(), point)
        return -abs(float(slope))

    found = minimize_scalar(negative_slope, bounds=(float(x[i]) - step, float(x[i]) + step), method="bounded",
                            options={"xatol": 1e-12})
    grid_best = float(slopes.abs()[i])
    return (-found.fun, float(found.x)) if -found.fun >= grid_best else (grid_best, float(x[i]))
