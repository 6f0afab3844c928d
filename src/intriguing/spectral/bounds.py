"""The per-kind registry of layer bounds, and the bounds of the layers the paper and modern networks use.

Every layer kind has one function ``bound(call, settings) -> BoundEstimate``: the paper-style upper
Lipschitz constant of Section 4.3 and the layer's exact constant. The walk
(:func:`intriguing.spectral.layer_bounds`) looks the function up by the module's type, so a new kind
joins with :func:`register_bound` and nothing else changes:

* ``Linear``: the largest singular value (bound = exact);
* ``Conv2d`` (grouped and depthwise too): Section 4.3's stride-aware Fourier formula on a grid where
  it bounds the layer's own padding (:func:`~intriguing.spectral.conv_fourier_bound`); exact by Lanczos;
* average pools (adaptive too): Schur's test; exact by Lanczos; an average over dimensions
  (``x.mean((2, 3))``) ``1 / sqrt(entries averaged)``;
* max pooling ``sqrt(max windows per pixel)``; local response normalisation the paper's ``k^-beta``;
  batch norm its largest channel scale (folded by the walk into the convolution it follows);
  reshapes and dropout (at evaluation) 1; activations in :mod:`intriguing.spectral.activations`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from intriguing.errors import IntriguingError
from intriguing.spectral.conv import as_pair, checked_pair, conv2d_map, conv_fourier_bound
from intriguing.spectral.functional import Mean, Reshape, Scale
from intriguing.spectral.graph import LayerCall
from intriguing.spectral.lanczos import NormSettings, OperatorNorm, operator_norm
from intriguing.spectral.trace import placement


class BoundEstimate(NamedTuple):
    """What a per-kind bound function returns: the paper-style bound, the exact constant, and how."""

    bound: float
    exact: float
    method: str


BoundFunction = Callable[[LayerCall, NormSettings], BoundEstimate]
_BOUNDS: dict[type, BoundFunction] = {}


def register_bound(*kinds: type[nn.Module]) -> Callable[[BoundFunction], BoundFunction]:
    """Register ``function(call, settings) -> BoundEstimate`` as the bound of the module types ``kinds``.

    Subclasses are covered too (the most specific registered type wins), e.g.::

        @spectral.register_bound(MyScale)
        def _(call, settings):
            c = abs(call.module.factor)
            return spectral.BoundEstimate(c, c, "|factor|")
    """

    def add(function: BoundFunction) -> BoundFunction:
        for kind in kinds:
            _BOUNDS[kind] = function
        return function

    return add


def bound_function(call: LayerCall) -> BoundFunction:
    """The registered bound of ``call``'s module type (the most specific one), or a clear error.

    A subclass that brings its own ``forward`` (e.g. a ``Conv2d`` that pads first) computes something
    its registered ancestor's bound does not describe: it is refused rather than bounded wrongly.
    """
    cls = type(call.module)
    for kind in cls.__mro__:
        if kind in _BOUNDS:
            if cls.forward is not kind.forward:
                raise IntriguingError(
                    f"layer {call.name!r}: {cls.__name__} is a {kind.__name__} with its own forward, which the "
                    f"{kind.__name__} bound does not describe; register one with "
                    f"intriguing.spectral.register_bound({cls.__name__})")
            return _BOUNDS[kind]
    known = ", ".join(sorted(k.__name__ for k in _BOUNDS))
    raise IntriguingError(
        f"layer {call.name!r}: no Lipschitz bound for modules of type {type(call.module).__name__}; "
        f"known kinds: {known}; add one with intriguing.spectral.register_bound({type(call.module).__name__})"
    )


# --- linear layers ----------------------------------------------------------------------------------------


def _linear_norm(call: LayerCall, settings: NormSettings, linear_map: Callable) -> OperatorNorm:
    return operator_norm(linear_map, call.input_shape, **placement(call.module), settings=settings)


def _lanczos_note(norm: OperatorNorm) -> str:
    status = "" if norm.converged else ", NOT converged: a lower estimate"
    return f"Lanczos on A^T A, {norm.steps} steps{status}"


@register_bound(nn.Linear)
def _linear(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """The paper's bound for a fully connected layer is its operator norm itself."""
    weight = call.module.weight.detach()
    norm = _linear_norm(call, settings, lambda x: F.linear(x, weight))
    return BoundEstimate(norm.value, norm.value, f"largest singular value ({_lanczos_note(norm)})")


@register_bound(nn.Conv2d)
def _conv2d(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    m = call.module
    bound, note = conv_fourier_bound(m.weight, call.input_shape[-2:], stride=m.stride, padding=m.padding,
                                     dilation=m.dilation, groups=m.groups, padding_mode=m.padding_mode)
    norm = _linear_norm(call, settings, conv2d_map(m))
    return BoundEstimate(bound, norm.value, f"bound: {note}; exact: {_lanczos_note(norm)}")


@register_bound(nn.AvgPool2d, nn.AdaptiveAvgPool2d)
def _average_pool(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """Schur's test for a nonnegative linear map: ``||A|| <= sqrt(max row sum * max column sum)``."""
    pool = call.module
    ones = torch.ones((1, *call.input_shape), dtype=torch.float64, requires_grad=True)  # the pool has no weights
    rows = pool(ones)
    (columns,) = torch.autograd.grad(rows.sum(), ones)
    bound = math.sqrt(float(rows.detach().max()) * float(columns.max()))
    norm = _linear_norm(call, settings, pool)
    return BoundEstimate(bound, norm.value, f"bound: Schur test; exact: {_lanczos_note(norm)}")


@register_bound(Mean)
def _mean(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """Each output averages its own ``n`` inputs: a row of ``n`` entries ``1/n``, norm ``1/sqrt(n)``, exactly."""
    n = math.prod(call.input_shape) / math.prod(call.output_shape)
    value = 1 / math.sqrt(n)
    return BoundEstimate(value, value, f"1/sqrt({n:g} entries averaged)")


@register_bound(Scale)
def _scale(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """``x * c`` sends each input entry to its own outputs: the norm is ``sqrt(max_i sum of c^2 over i's copies)``."""
    factor = call.module.factor.detach().double()
    ones = torch.ones((1, *call.input_shape), dtype=torch.float64, requires_grad=True)
    (squares,) = torch.autograd.grad((ones * factor).square().sum() / 2, ones)  # sum of c^2 over each entry's copies
    value = math.sqrt(float(squares.max()))
    return BoundEstimate(value, value, "sqrt(max sum of factor^2 over an entry's copies)")


@register_bound(nn.BatchNorm1d, nn.BatchNorm2d)
def _batch_norm(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """At evaluation batch norm scales channel ``c`` by ``gamma_c / sqrt(var_c + eps)``: the norm is the largest."""
    m = call.module
    if m.running_var is None:
        raise IntriguingError(f"layer {call.name!r}: batch norm without running statistics depends on the whole "
                              "batch, so it has no per-example Lipschitz constant")
    scale = (m.running_var.detach().double() + m.eps).rsqrt()
    if m.weight is not None:
        scale = scale * m.weight.detach().double()
    value = float(scale.abs().max())
    return BoundEstimate(value, value, "max |gamma| / sqrt(running var + eps)")


# --- nonlinear layers ----------------------------------------------------------------------------------------


@register_bound(nn.MaxPool2d)
def _max_pool(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """``sqrt(max number of windows holding one pixel)``, attained by moving a pixel that is all their maxima.

    Each output moves by at most the largest change in its window, so
    ``||dy||^2 <= sum_windows max_i dx_i^2 <= (max windows per pixel) ||dx||^2``. Without overlap
    that is the paper's "max-pooling is contractive"; 3x3 windows with stride 2 give 2.
    """
    m = call.module
    kernel, stride = checked_pair(m.kernel_size, "kernel_size"), checked_pair(m.stride, "stride")
    padding, dilation = as_pair(m.padding), checked_pair(m.dilation, "dilation")
    copies = 1
    for size, out, k, s, p, d in zip(call.input_shape[-2:], call.output_shape[-2:], kernel, stride, padding, dilation):
        taps = (np.arange(out)[:, None] * s - p + d * np.arange(k)[None, :]).ravel()
        copies *= int(np.bincount(taps[(taps >= 0) & (taps < size)], minlength=size).max())
    value = math.sqrt(copies)
    return BoundEstimate(value, value, f"sqrt(max windows per pixel = {copies})")


@register_bound(nn.LocalResponseNorm)
def _local_response_norm(call: LayerCall, settings: NormSettings) -> BoundEstimate:
    """The paper's contrast-normalisation bound ``eps^-gamma`` for ``x / (eps + ||x||^2)^gamma``.

    PyTorch's ``b_c = a_c / (k + alpha/n * sum_window a^2)^beta`` is ``(n/alpha)^beta`` times that map with
    ``eps = k n / alpha`` and ``gamma = beta``, so the bound is ``k^-beta``. It is attained at ``x = 0``
    (the Jacobian there is ``k^-beta I``). The paper states it for ``gamma`` in [0.5, 1]; for one
    window the proof holds for ``0 < beta <= 1`` (the Jacobian's eigenvalues are ``D^-beta`` and
    ``D^-beta (1 - 2 beta ||x||^2 / D)``), which is where it is used here. For PyTorch's overlapping
    channel windows the tests check the Jacobian's norm against it at points of every scale.
    """
    m = call.module
    if not 0 < m.beta <= 1 or m.k <= 0 or m.alpha < 0:
        raise IntriguingError(f"layer {call.name!r}: the paper's normalisation bound needs 0 < beta <= 1, k > 0 "
                              f"and alpha >= 0, got beta={m.beta}, k={m.k}, alpha={m.alpha}")
    value = float(m.k) ** -float(m.beta)
    return BoundEstimate(value, value, "k^-beta (Sec. 4.3), attained at 0")


def constant(value: float, why: str) -> BoundFunction:
    """A bound function for a kind whose constant is ``value`` whatever its parameters."""
    return lambda call, settings: BoundEstimate(value, value, why)


register_bound(nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout2d, Reshape)(
    constant(1.0, "reshape / identity at evaluation"))
