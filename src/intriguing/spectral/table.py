"""The layer table of a network, its whole-network bound, and empirical lower bounds (Section 4.3, Table 5).

:func:`layer_bounds` walks the network's graph (:func:`~intriguing.spectral.trace_graph`) and
records, per layer, the paper's bound and the exact Lipschitz constant of the layer as implemented,
so one can see how loose the paper's method is. :func:`spectral_table` composes them into a bound on
the whole network (the paper's product for a chain) and sets two empirical *lower* bounds beside
it: the largest input-Jacobian norm over data, and ``||f(x')-f(x)|| / ||x'-x||`` over adversarial
pairs. The network's Lipschitz constant lies in between.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.attacks.base import model_output
from intriguing.errors import IntriguingError, check_finite_parameters, check_images, check_seed
from intriguing.spectral.bounds import BoundEstimate, bound_function
from intriguing.spectral.conv import as_pair
from intriguing.spectral.graph import LayerCall, LayerGraph
from intriguing.spectral.lanczos import NormSettings
from intriguing.spectral.trace import evaluation_mode, trace_graph


@dataclass
class LayerBound:
    """One layer of the walk: what it is, the paper's bound and the exact Lipschitz constant.

    ``bound`` is the paper-style upper bound (Section 4.3); ``exact`` the layer's own Lipschitz
    constant (for linear layers the operator norm, computed to relative tolerance ``tol``;
    for the nonlinear ones the closed form, which is attained); ``ratio = bound / exact >= 1``
    says how loose the bound is. ``size`` follows the paper's Table 5 (``C x N x N x D`` for a
    convolution, ``in x out`` for a fully connected layer); ``method`` says how both were obtained.
    """

    name: str
    kind: str
    size: str
    input_shape: list[int]
    output_shape: list[int]
    stride: int | list[int] | None
    bound: float
    exact: float
    ratio: float
    method: str
    seconds: float


@dataclass
class SpectralTable:
    """The layer walk of one network, the bound on the whole network and the empirical lower bounds.

    ``product_bound`` composes the paper-style layer bounds over the network's graph: for a chain
    (every network of the paper) their product, the paper's upper bound on the network's
    instability; with branches, sums over residual additions and root sums of squares over
    concatenations (:mod:`intriguing.spectral.graph`). ``product_exact`` composes the exact layer
    constants the same way (a tighter bound, still valid). ``gradient_lower_bound`` is
    ``max_x ||J_f(x)||_2`` over ``images`` data points and ``pair_lower_bound``
    ``max ||f(x')-f(x)|| / ||x'-x||`` over ``pairs`` adversarial pairs (``None``: not measured): the
    network's Lipschitz constant lies between the largest lower bound and ``product_exact``.
    """

    model: str
    input_shape: list[int]
    layers: list[LayerBound]
    product_bound: float
    product_exact: float
    gradient_lower_bound: float | None = None
    images: int = 0
    pair_lower_bound: float | None = None
    pairs: int = 0
    seconds: float = 0.0


def layer_bounds(model: nn.Module, input_shape: Sequence[int], *, tol: float = 1e-5, max_steps: int = 1000,
                 seed: int = 0, progress: bool = False) -> list[LayerBound]:
    """Walk ``model``'s layers in execution order and bound each one (see the module docstring).

    ``input_shape`` is one input's shape without the batch dimension, e.g. ``(1, 28, 28)``. Exact
    norms of linear layers are computed to relative residual ``tol`` (see :class:`NormSettings`;
    Lanczos seeded by ``seed``, at most ``max_steps`` steps per layer). The model is evaluated in
    eval mode.
    """
    return _bounded(model, input_shape, tol=tol, max_steps=max_steps, seed=seed, progress=progress)[1]


def _bounded(model: nn.Module, input_shape: Sequence[int], *, tol: float, max_steps: int, seed: int,
             progress: bool) -> tuple[LayerGraph, list[LayerBound]]:
    if not isinstance(model, nn.Module):
        raise IntriguingError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not 0 < tol < 1:
        raise IntriguingError(f"tol: expected a relative tolerance in (0, 1), got {tol!r}")
    check_seed(seed)
    check_finite_parameters(model)
    settings = NormSettings(tol=tol, max_steps=max_steps, seed=seed)
    rows = []
    with evaluation_mode(model):
        graph = trace_graph(model, input_shape)
        calls = graph.calls
        functions = [bound_function(call) for call in calls]  # an unknown kind fails before any work
        for call, function in tqdm(list(zip(calls, functions)), desc="layers", disable=None if progress else True,
                                   leave=False):
            start = time.perf_counter()
            estimate = function(call, settings)
            rows.append(_record(call, estimate, time.perf_counter() - start))
    return graph, rows


def _record(call: LayerCall, estimate: BoundEstimate, seconds: float) -> LayerBound:
    bound, exact = float(estimate.bound), float(estimate.exact)
    ratio = bound / exact if exact > 0 else (1.0 if bound == 0 else math.inf)
    stride = getattr(call.module, "stride", None)
    if stride is not None:
        stride = as_pair(stride)
        stride = stride[0] if stride[0] == stride[1] else list(stride)
    return LayerBound(name=call.name, kind=call.label, size=_size(call.module),
                      input_shape=list(call.input_shape), output_shape=list(call.output_shape), stride=stride,
                      bound=bound, exact=exact, ratio=ratio, method=estimate.method, seconds=seconds)


def _size(module: nn.Module) -> str:
    """Table 5's size column: ``C x kh x kw x D`` for convolutions, ``in x out`` for linear layers."""
    if isinstance(module, nn.Conv2d):
        return f"{module.in_channels}x{module.kernel_size[0]}x{module.kernel_size[1]}x{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"{module.in_features}x{module.out_features}"
    kernel = getattr(module, "kernel_size", None)
    return f"{as_pair(kernel)[0]}x{as_pair(kernel)[1]}" if kernel is not None else ""


def gradient_lower_bound(model: nn.Module, images: torch.Tensor, *, batch_size: int | None = None) -> float:
    """``max_x ||J_f(x)||_2`` over ``images``: the largest spectral norm of the logits' input Jacobian.

    At every point where the network is differentiable ``||J_f(x)|| <= Lip(f)``, so this is a lower
    bound on the network's Lipschitz constant, to set against the product of layer bounds. The
    Jacobian of a batch comes from one vectorised backward pass per class (``is_grads_batched``);
    ``batch_size`` (default: what fits in about 256 MB) bounds its memory, ``K * batch * pixels``.
    """
    check_images(images, "images", bounds=(-math.inf, math.inf))
    best = 0.0
    with evaluation_mode(model):
        classes = model_output(model, images[:1], "images").shape[1]
        pixels = images[0].numel()
        batch_size = batch_size or max(1, (1 << 26) // (classes * pixels))
        eye = torch.eye(classes, dtype=images.dtype, device=images.device)
        for x in images.split(batch_size):
            x = x.detach().requires_grad_(True)
            logits = model(x)
            (jacobian,) = torch.autograd.grad(logits, x, eye[:, None, :].expand(classes, len(x), classes),
                                              is_grads_batched=True)  # (K, N, *input)
            jacobian = jacobian.reshape(classes, len(x), -1).transpose(0, 1)  # (N, K, pixels)
            best = max(best, float(torch.linalg.matrix_norm(jacobian.double(), ord=2).max()))
    return best


def pair_ratios(model: nn.Module, x: torch.Tensor, x_other: torch.Tensor) -> torch.Tensor:
    """``||f(x') - f(x)|| / ||x' - x||`` for each pair: each is a lower bound on the Lipschitz constant.

    Pairs are typically an input and its adversarial example (``result.adversarial[result.success]``
    of :class:`intriguing.attacks.LBFGS`), but any pairs will do.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_other, torch.Tensor) or x.shape != x_other.shape:
        raise IntriguingError(f"pairs: expected two tensors of the same shape, got "
                              f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(x_other, 'shape', ()))}")
    check_images(x, "x", bounds=(-math.inf, math.inf))
    check_images(x_other, "x_other", bounds=(-math.inf, math.inf))
    with evaluation_mode(model):
        model_output(model, x[:1], "x")
    distance = (x_other - x).flatten(1).double().norm(dim=1)
    if (distance == 0).any():
        raise IntriguingError(f"pairs: {int((distance == 0).sum())} pair(s) have x' == x; keep only distinct pairs "
                              "(e.g. the attack's successful examples)")
    with evaluation_mode(model), torch.no_grad():
        change = (model(x_other) - model(x)).flatten(1).double().norm(dim=1)
    return change / distance


def spectral_table(model: nn.Module, input_shape: Sequence[int], *, name: str = "model",
                   images: torch.Tensor | None = None,
                   pairs: tuple[torch.Tensor, torch.Tensor] | None = None, tol: float = 1e-5,
                   seed: int = 0, progress: bool = False) -> SpectralTable:
    """:func:`layer_bounds`, the whole-network bounds and the empirical lower bounds in one record.

    ``images`` (optional) feed :func:`gradient_lower_bound`, ``pairs = (x, x')`` (optional, e.g.
    adversarial pairs) :func:`pair_ratios`.
    """
    start = time.perf_counter()
    graph, layers = _bounded(model, input_shape, tol=tol, max_steps=1000, seed=seed, progress=progress)
    table = SpectralTable(model=name, input_shape=list(input_shape), layers=layers,
                          product_bound=graph.compose([layer.bound for layer in layers]),
                          product_exact=graph.compose([layer.exact for layer in layers]))
    if images is not None:
        table.gradient_lower_bound, table.images = gradient_lower_bound(model, images), len(images)
    if pairs is not None:
        if not isinstance(pairs, (tuple, list)) or len(pairs) != 2:
            listed = isinstance(pairs, (tuple, list))
            got = f"{type(pairs).__name__} of {len(pairs)}" if listed else type(pairs).__name__
            raise IntriguingError(f"pairs: expected a pair (x, x_other) of tensors, got {got}")
        table.pair_lower_bound, table.pairs = float(pair_ratios(model, *pairs).max()), len(pairs[0])
    table.seconds = time.perf_counter() - start
    return table


def adversarial_pairs(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                      config: LBFGSConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and their minimal adversarial examples (Section 4.1's L-BFGS, untargeted), where the attack succeeded.

    Inputs the model already misclassifies "succeed" unchanged and are left out, like failures.
    ``config`` configures :class:`intriguing.attacks.LBFGS` (default: ``LBFGSConfig.refined()``).
    """
    result = LBFGS(config)(model, x, labels=labels)
    keep = result.success & (result.adversarial != x).flatten(1).any(dim=1)
    return x[keep], result.adversarial[keep]

