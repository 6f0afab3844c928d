"""Layer-wise Lipschitz upper bounds next to the exact norms (Szegedy et al. 2014, Section 4.3, Table 5).

The paper measures a network's instability by an upper Lipschitz constant per layer,
``||phi_k(x) - phi_k(x + r)|| <= L_k ||r||``, whose product bounds the whole network. This module
walks any chain of layers in execution order and records, per layer, the paper's bound and the exact
Lipschitz constant of the layer *as implemented* (padding, stride, dilation and groups included),
so one can see how loose the paper's method is:

* ``Linear``: the largest singular value (bound = exact);
* ``Conv2d``: the bound is Section 4.3's Fourier formula with stride,
  ``sup_xi ||A(xi)|| / Delta`` over the aliased frequencies of the subsampled output,
  evaluated on a grid where it is a *true* upper bound for the layer's own padding (see
  :func:`conv_fourier_bound`); the exact norm comes from Lanczos on ``A^T A`` (a power iteration that
  keeps its Krylov basis) through ``conv2d`` and its adjoint ``conv_transpose2d`` (via autograd);
* activations: ReLU 1, sigmoid 1/4, tanh 1; max pooling ``sqrt(max windows per pixel)`` (1 without
  overlap; AlexNet's 3x3 stride-2 pools are 2-Lipschitz, not 1); local response normalisation the
  paper's ``eps^-gamma`` bound; reshapes and dropout (at evaluation) 1.

:func:`spectral_table` adds the product bound and two empirical *lower* bounds on the network's
Lipschitz constant (the largest input-Jacobian norm over data, and ``||f(x')-f(x)|| / ||x'-x||`` over
adversarial pairs), so the gap between what the bounds allow and what the network does is visible.
A new layer kind joins with :func:`register_bound`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from intriguing import alexnet, data, report, zoo
from intriguing.errors import IntriguingError, check_finite_parameters, check_images
from intriguing.records import to_jsonable
from intriguing.reproduce import Claim, Context, Section, paper, preset_settings, register

# --- records ---------------------------------------------------------------------------------------


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
    """The layer walk of one network, the product bound and the empirical lower bounds.

    ``product_bound`` multiplies the paper-style bounds (the paper's upper bound on the network's
    instability); ``product_exact`` multiplies the exact layer constants (a tighter bound, still
    valid). ``gradient_lower_bound`` is ``max_x ||J_f(x)||_2`` over ``images`` data points and
    ``pair_lower_bound`` ``max ||f(x')-f(x)|| / ||x'-x||`` over ``pairs`` adversarial pairs (``None``:
    not measured): the network's Lipschitz constant lies between the largest lower bound and
    ``product_exact``.
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


# --- the layer walk ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCall:
    """One call of a leaf module during the traced forward pass (shapes without the batch dimension)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block (dropout off, batch-norm running statistics), restored after."""
    training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, flag in training.items():
            module.training = flag


def trace_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerCall]:
    """The leaf modules the forward pass calls, in execution order, with their input/output shapes.

    Execution order, not ``children()`` order: modules never called (e.g. the autoencoder's
    decoder) are not part of the function. The walk must be a chain: each leaf's input is the
    previous leaf's output, the first takes the model's input and the last gives its output;
    anything else (a functional op between modules, a residual branch) is refused, because the
    product of per-layer bounds would not bound such a network.
    """
    input_shape = _checked_shape(input_shape)
    leaves = [(name or type(module).__name__, module) for name, module in model.named_modules()
              if next(module.children(), None) is None]
    calls: list[tuple[str, nn.Module, tuple, Any]] = []

    def recorder(name: str) -> Callable:
        return lambda module, inputs, output: calls.append((name, module, inputs, output))

    handles = [module.register_forward_hook(recorder(name)) for name, module in leaves]
    x = torch.zeros((1, *input_shape), **_placement(model))
    try:
        with torch.no_grad(), evaluation_mode(model):
            out = model(x)
    except (RuntimeError, ValueError, TypeError) as e:
        raise IntriguingError(
            f"the model does not accept inputs shaped {input_shape} (without the batch dimension): {e}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        raise IntriguingError("the model's forward pass calls no module: nothing to bound")
    previous, walked = x, []
    for name, module, inputs, output in calls:
        if len(inputs) != 1 or inputs[0] is not previous:
            raise IntriguingError(
                f"layer {name!r} ({type(module).__name__}) does not take the previous layer's output: the model "
                "is not a chain of modules (a functional op such as torch.flatten, or a branch, sits between "
                "layers); use modules (e.g. nn.Flatten) so that every step is a layer with a bound"
            )
        if not isinstance(output, torch.Tensor):
            raise IntriguingError(f"layer {name!r} ({type(module).__name__}) returns {type(output).__name__}, "
                                  "not a tensor")
        walked.append(LayerCall(name, module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))
        previous = output
    if out is not previous:
        raise IntriguingError(
            f"the model's output is not the output of its last layer {walked[-1].name!r}: an operation after "
            "the last module is not covered by any bound; make it a module"
        )
    return walked


def _checked_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(d < 1 for d in shape) or any(d != s for d, s in zip(shape, input_shape)):
        raise IntriguingError(
            f"input_shape: expected the shape of one input without the batch dimension, e.g. (1, 28, 28), "
            f"got {input_shape!r}"
        )
    return shape


def _placement(module: nn.Module) -> dict[str, Any]:
    """The dtype and device of the module's first parameter (float32 on the CPU for parameter-free modules)."""
    parameter = next(module.parameters(), None)
    if parameter is None or not parameter.is_floating_point():
        return {"dtype": torch.float32, "device": torch.device("cpu")}
    return {"dtype": parameter.dtype, "device": parameter.device}


# --- the registry of per-kind bounds -------------------------------------------------------------------


@dataclass(frozen=True)
class NormSettings:
    """How exact operator norms are computed: Lanczos stops at relative residual ``tol`` or ``max_steps``.

    The residual ``||A^T A y - theta y|| <= tol * theta`` puts ``theta = sigma^2`` within ``tol``
    (relative) of an eigenvalue of ``A^T A``: the top one, unless a nearly equal one sits just below it
    and the start vector missed it (then ``theta`` is that close below the top, never above). The
    default gives five significant digits of ``sigma``.
    """

    tol: float = 1e-5
    max_steps: int = 1000
    seed: int = 0


class Estimate(NamedTuple):
    """What a per-kind bound function returns: the paper-style bound, the exact constant, and how."""

    bound: float
    exact: float
    method: str


BoundFunction = Callable[[LayerCall, NormSettings], Estimate]
_BOUNDS: dict[type, BoundFunction] = {}


def register_bound(*kinds: type[nn.Module]) -> Callable[[BoundFunction], BoundFunction]:
    """Register ``function(call, settings) -> Estimate`` as the bound of the module types ``kinds``.

    Subclasses are covered too (the most specific registered type wins), e.g.::

        @spectral.register_bound(MyScale)
        def _(call, settings):
            c = abs(call.module.factor)
            return spectral.Estimate(c, c, "|factor|")
    """

    def add(function: BoundFunction) -> BoundFunction:
        for kind in kinds:
            _BOUNDS[kind] = function
        return function

    return add


def _bound_function(call: LayerCall) -> BoundFunction:
    for kind in type(call.module).__mro__:
        if kind in _BOUNDS:
            return _BOUNDS[kind]
    known = ", ".join(sorted(k.__name__ for k in _BOUNDS))
    raise IntriguingError(
        f"layer {call.name!r}: no Lipschitz bound for modules of type {type(call.module).__name__}; "
        f"known kinds: {known}; add one with intriguing.spectral.register_bound({type(call.module).__name__})"
    )


# --- exact operator norms --------------------------------------------------------------------------------


class OperatorNorm(NamedTuple):
    """The largest singular value found, the Lanczos steps it took, and whether ``tol`` was reached.

    ``value`` never exceeds the true norm (up to rounding): it is a Ritz value of ``A^T A``.
    """

    value: float
    steps: int
    converged: bool


# Krylov vectors kept before a restart (float64, at most BASIS_BYTES): AlexNet's layers converge within one cycle.
MAX_BASIS, MIN_BASIS, BASIS_BYTES = 300, 20, 1 << 28


def operator_norm(linear_map: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int], *,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  settings: NormSettings = NormSettings()) -> OperatorNorm:
    """The largest singular value of the linear map ``linear_map`` on inputs shaped ``(1, *input_shape)``.

    Lanczos on ``A^T A`` with full reorthogonalisation (restarted from the best Ritz vector when the
    basis is full): a power iteration that keeps its Krylov basis, so that clustered top singular
    values (random matrices, convolutions on large grids) converge in tens of steps instead of
    thousands. It stops when the Ritz value's residual ``||A^T A y - theta y||`` is at most
    ``settings.tol * theta``. ``A^T`` comes from autograd (a backward pass through the map's graph,
    built once: for a convolution that is ``conv_transpose2d``), so any padding mode, stride,
    dilation or group structure is handled by the layer's own code. The map must be linear (no
    bias). The basis is kept in float64; the map runs in ``dtype`` on ``device``.
    """
    shape = (1, *input_shape)
    n = math.prod(shape)
    origin = torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)
    with torch.enable_grad():
        image = linear_map(origin)  # the graph of a linear map is the same at every point: build it once

    def gram(v: torch.Tensor) -> torch.Tensor:  # A^T A v, flat float64
        (back,) = torch.autograd.grad(image, origin, linear_map(v.to(dtype).view(shape)), retain_graph=True)
        return back.reshape(-1).double()

    size = min(n, max(MIN_BASIS, min(MAX_BASIS, BASIS_BYTES // (8 * n))))
    q = torch.randn(n, generator=torch.Generator().manual_seed(settings.seed), dtype=torch.float64).to(device)
    steps = 0
    while True:
        theta, residual, q, used = _lanczos_cycle(gram, q / q.norm(), size, settings.tol)
        steps += used
        converged = residual <= settings.tol * theta
        if converged or steps >= settings.max_steps:
            return OperatorNorm(math.sqrt(max(theta, 0.0)), steps, converged)


def _lanczos_cycle(gram: Callable[[torch.Tensor], torch.Tensor], q: torch.Tensor, size: int,
                   tol: float) -> tuple[float, float, torch.Tensor, int]:
    """Lanczos steps from unit vector ``q`` until the top Ritz value's residual is ``<= tol * theta`` or ``size`` steps.

    Returns the largest Ritz value ``theta``, its residual ``||A^T A y - theta y||`` (0 when the
    Krylov space became invariant: then ``theta`` is exact), the Ritz vector ``y`` (the next
    cycle's start) and the steps used.
    """
    basis = torch.empty(size, q.numel(), dtype=torch.float64, device=q.device)
    basis[0] = q
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(size):
        w = gram(basis[j])
        alphas.append(float(w @ basis[j]))
        w -= alphas[-1] * basis[j] + (betas[-1] * basis[j - 1] if betas else 0.0)  # the three-term recurrence
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)  # full reorthogonalisation against rounding
        beta = float(w.norm())
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        values, vectors = torch.linalg.eigh(tridiagonal)
        theta = float(values[-1])
        invariant = beta <= 1e-12 * max(abs(theta), 1e-300)
        residual = 0.0 if invariant else beta * abs(float(vectors[-1, -1]))
        if residual <= tol * theta or j + 1 == size:
            return theta, residual, vectors[:, -1] @ basis[: j + 1], j + 1
        betas.append(beta)
        basis[j + 1] = w / beta
    raise AssertionError("unreachable: the loop returns at j + 1 == size")


# --- Conv2d: the paper's Fourier bound (Section 4.3) -------------------------------------------------------


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")  # nn.Conv2d's


def conv_fourier_bound(weight: torch.Tensor, input_size: Sequence[int], *, stride: int | Sequence[int] = 1,
                       padding: int | str | Sequence = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
                       padding_mode: str = "zeros") -> tuple[float, str]:
    """Section 4.3's stride-aware Fourier bound on the operator norm of ``conv2d`` with these arguments.

    Arguments mirror :class:`torch.nn.Conv2d`; ``input_size`` is ``(H, W)``. Returns the bound and a
    note saying on which grid it was evaluated.

    The paper's formula: a stride-``Delta`` convolution on a circular ``N x N`` grid is, frequency by
    frequency, the ``D x (C * Delta^2)`` matrix ``A(xi)`` of the filters' DFTs at the ``Delta^2``
    frequencies ``xi + k N / Delta`` that subsampling folds onto ``xi``, and (Parseval)
    ``||W|| = sup_xi ||A(xi)|| / Delta``. That is exact for *circular* padding when ``Delta`` divides
    ``N``, evaluated on the input's own grid. For any other padding the formula on the input grid is
    not a bound; instead the layer is written as ``(padding copy map) -> valid convolution``: the
    valid convolution on the padded length ``L`` read by the layer is a restriction of the circular
    one on any grid ``N >= L`` (no index wraps around), so the formula on ``N = L`` rounded up to a
    multiple of the stride bounds it, and the copy map has norm ``sqrt(max copies of one pixel)``
    (1 for zero padding; more where reflect / replicate / circular padding repeat pixels).

    The stride-1 formula would bound a strided layer too (subsampling has norm 1), but loosely: the
    stride-aware one is never above it on the same grid, and 2.7x tighter on AlexNet's first layer
    (``benchmarks/spectral_speed.py``).
    """
    weight = weight.detach()
    if weight.dim() != 4:
        raise IntriguingError(f"weight: expected a conv2d weight (D, C/groups, kh, kw), got {tuple(weight.shape)}")
    kernel = tuple(weight.shape[2:])
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = _padding_pairs(padding, kernel, dilation)
    if padding_mode not in PADDING_MODES:
        raise IntriguingError(f"padding_mode: expected one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
    grid, gain, notes = [], 1.0, []
    for size, (low, high), step, k, d in zip(_pair(input_size, "input_size"), pads, stride, kernel, dilation):
        span = d * (k - 1) + 1
        out = (size + low + high - span) // step + 1
        if out < 1:
            raise IntriguingError(f"input size {size} is smaller than the kernel's span {span} after padding")
        if padding_mode == "circular" and size % step == 0 and out <= size // step:
            grid.append(size)  # the layer is (a restriction of) the circular convolution on its own grid
            notes.append("circular")
        else:
            read = step * (out - 1) + span  # padded positions the layer reads
            grid.append(-(-read // step) * step)
            gain *= _copy_gain(padding_mode, size, low, high, read)
            notes.append(padding_mode)
    sup = _fourier_sup(weight.double(), tuple(grid), stride, dilation, groups)
    kinds = notes[0] if notes[0] == notes[1] else "/".join(notes)
    note = f"Sec. 4.3 formula on a {grid[0]}x{grid[1]} grid ({kinds}), stride {_label(stride)}"
    if gain != 1.0:
        note += f", x{gain:.3g} for the padding's repeated pixels"
    return gain * sup, note


def _fourier_sup(weight: torch.Tensor, grid: tuple[int, int], stride: tuple[int, int],
                 dilation: tuple[int, int], groups: int) -> float:
    """``max_xi ||A(xi)|| / sqrt(sh * sw)`` over the ``(Nh/sh) x (Nw/sw)`` aliased frequency classes.

    Groups are independent convolutions (a block-diagonal operator), kept as a batch dimension:
    the norm is the largest over groups. Real filters give ``||A(-xi)|| = ||A(xi)||``, so only half
    of the frequency rows are evaluated; rows are processed in chunks to bound memory.
    """
    d_out, c_in, kh, kw = weight.shape
    w = weight.reshape(groups, d_out // groups, c_in, kh, kw)
    (nh, nw), (sh, sw) = grid, stride
    mh, mw = nh // sh, nw // sw
    dft_h, dft_w = _dft(nh, kh, dilation[0]), _dft(nw, kw, dilation[1]).to(weight.device)
    along_w = torch.einsum("gdcuv,wv->gdcuw", w.to(torch.complex128), dft_w)  # DFT over the kernel's width
    rows = torch.arange(mh // 2 + 1)
    side = min(d_out // groups, c_in * sh * sw)
    per_row = 16 * (2 * along_w[..., 0, :].numel() * sh + mw * groups * side**2)  # bytes: DFTs, their copy, Grams
    best = 0.0
    for chunk in rows.split(max(1, _CHUNK_BYTES // per_row)):
        xi_h = chunk[:, None] + mh * torch.arange(sh)[None, :]  # (r, sh): the frequencies folded onto each row
        spectrum = torch.einsum("rau,gdcuw->rgdcaw", dft_h[xi_h].to(weight.device), along_w)  # (r, G, Dg, C, sh, Nw)
        spectrum = spectrum.reshape(*spectrum.shape[:5], sw, mw)  # xi_w = b * mw + eta_w
        a = spectrum.permute(0, 6, 1, 2, 3, 4, 5).reshape(len(chunk), mw, groups, d_out // groups, c_in * sh * sw)
        best = max(best, float(_largest_singular_values(a).max()))
    return best / math.sqrt(sh * sw)


_CHUNK_BYTES = 1 << 27


def _largest_singular_values(a: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix in the batch, from the smaller Gram matrix's top eigenvalue."""
    gram = a @ a.mH if a.shape[-2] <= a.shape[-1] else a.mH @ a
    return torch.linalg.eigvalsh(gram)[..., -1].clamp(min=0).sqrt()


def _dft(n: int, k: int, dilation: int) -> torch.Tensor:
    """``exp(-2 pi i xi d u / n)`` for frequency ``xi`` in ``[0, n)`` and tap ``u`` in ``[0, k)``: (n, k)."""
    phase = (torch.arange(n)[:, None] * dilation * torch.arange(k)[None, :]) % n
    return torch.exp(-2j * math.pi * phase.to(torch.float64) / n)


def _copy_gain(mode: str, size: int, low: int, high: int, read: int) -> float:
    """Norm of the padding map restricted to the first ``read`` padded positions: sqrt(max copies of a pixel)."""
    index = torch.arange(size, dtype=torch.float64).view(1, 1, size)
    if mode == "zeros":
        padded = F.pad(index, (low, high), mode="constant", value=-1.0)
    else:
        padded = F.pad(index, (low, high), mode=mode)
    taken = padded.reshape(-1)[:read].long()
    counts = torch.bincount(taken[taken >= 0], minlength=size)
    return math.sqrt(int(counts.max()))


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise IntriguingError(f"{name}: expected a positive int or a pair of them, got {value!r}")
    return pair


def _padding_pairs(padding: int | str | Sequence, kernel: tuple[int, int],
                   dilation: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))`` from ``nn.Conv2d``'s padding (int, pair, 'valid', 'same') or pairs.

    ``'same'`` puts the odd extra row/column at the end, as PyTorch does.
    """
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)  # type: ignore[return-value]
    if isinstance(padding, int):
        padding = (padding, padding)
    pairs = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    if len(pairs) != 2 or not all(len(p) == 2 and all(isinstance(v, int) and v >= 0 for v in p) for p in pairs):
        raise IntriguingError(f"padding: expected an int, a pair, 'same', 'valid' or ((top, bottom), (left, right)), "
                              f"got {padding!r}")
    return pairs  # type: ignore[return-value]


def conv2d_map(module: nn.Conv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """The linear part of ``module`` (its bias left out): pad as the module does, then a valid conv2d."""
    pads = _padding_pairs(module.padding, module.kernel_size, module.dilation)
    flat_pads = (*pads[1], *pads[0])  # F.pad's order: last dimension first
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    weight = module.weight.detach()
    return lambda x: F.conv2d(F.pad(x, flat_pads, mode=mode), weight, None, module.stride, 0,
                              module.dilation, module.groups)


# --- per-kind bounds ------------------------------------------------------------------------------------


def _linear_norm(call: LayerCall, settings: NormSettings, linear_map: Callable) -> OperatorNorm:
    return operator_norm(linear_map, call.input_shape, **_placement(call.module), settings=settings)


def _lanczos_note(norm: OperatorNorm) -> str:
    status = "" if norm.converged else ", NOT converged: a lower estimate"
    return f"Lanczos on A^T A, {norm.steps} steps{status}"


@register_bound(nn.Linear)
def _linear(call: LayerCall, settings: NormSettings) -> Estimate:
    """The paper's bound for a fully connected layer is its operator norm itself."""
    weight = call.module.weight.detach()
    norm = _linear_norm(call, settings, lambda x: F.linear(x, weight))
    return Estimate(norm.value, norm.value, f"largest singular value ({_lanczos_note(norm)})")


@register_bound(nn.Conv2d)
def _conv2d(call: LayerCall, settings: NormSettings) -> Estimate:
    m = call.module
    bound, note = conv_fourier_bound(m.weight, call.input_shape[-2:], stride=m.stride, padding=m.padding,
                                     dilation=m.dilation, groups=m.groups, padding_mode=m.padding_mode)
    norm = _linear_norm(call, settings, conv2d_map(m))
    return Estimate(bound, norm.value, f"bound: {note}; exact: {_lanczos_note(norm)}")


def _constant(value: float, why: str) -> BoundFunction:
    return lambda call, settings: Estimate(value, value, why)


register_bound(nn.ReLU, nn.Hardtanh)(_constant(1.0, "max |slope| = 1"))
register_bound(nn.Tanh)(_constant(1.0, "max derivative 1, at 0"))
register_bound(nn.Sigmoid)(_constant(0.25, "max derivative 1/4, at 0"))
register_bound(nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout2d)(
    _constant(1.0, "reshape / identity at evaluation"))


@register_bound(nn.LeakyReLU)
def _leaky_relu(call: LayerCall, settings: NormSettings) -> Estimate:
    slope = max(1.0, abs(call.module.negative_slope))
    return Estimate(slope, slope, "max |slope|")


@register_bound(nn.MaxPool2d)
def _max_pool(call: LayerCall, settings: NormSettings) -> Estimate:
    """``sqrt(max number of windows holding one pixel)``, attained by moving a pixel that is all their maxima.

    Each output moves by at most the largest change in its window, so
    ``||dy||^2 <= sum_windows max_i dx_i^2 <= (max windows per pixel) ||dx||^2``. Without overlap
    that is the paper's "max-pooling is contractive"; 3x3 windows with stride 2 give 2.
    """
    m = call.module
    kernel, stride = _pair(m.kernel_size, "kernel_size"), _pair(m.stride, "stride")
    padding, dilation = _as_pair(m.padding), _pair(m.dilation, "dilation")
    copies = 1
    for size, out, k, s, p, d in zip(call.input_shape[-2:], call.output_shape[-2:], kernel, stride, padding, dilation):
        taps = (np.arange(out)[:, None] * s - p + d * np.arange(k)[None, :]).ravel()
        copies *= int(np.bincount(taps[(taps >= 0) & (taps < size)], minlength=size).max())
    value = math.sqrt(copies)
    return Estimate(value, value, f"sqrt(max windows per pixel = {copies})")


def _as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


@register_bound(nn.AvgPool2d, nn.AdaptiveAvgPool2d)
def _average_pool(call: LayerCall, settings: NormSettings) -> Estimate:
    """Schur's test for a nonnegative linear map: ``||A|| <= sqrt(max row sum * max column sum)``."""
    pool = call.module
    ones = torch.ones((1, *call.input_shape), dtype=torch.float64, requires_grad=True)  # the pool has no weights
    rows = pool(ones)
    (columns,) = torch.autograd.grad(rows.sum(), ones)
    bound = math.sqrt(float(rows.detach().max()) * float(columns.max()))
    norm = _linear_norm(call, settings, pool)
    return Estimate(bound, norm.value, f"bound: Schur test; exact: {_lanczos_note(norm)}")


@register_bound(nn.LocalResponseNorm)
def _local_response_norm(call: LayerCall, settings: NormSettings) -> Estimate:
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
    return Estimate(value, value, "k^-beta (Sec. 4.3), attained at 0")


@register_bound(nn.BatchNorm1d, nn.BatchNorm2d)
def _batch_norm(call: LayerCall, settings: NormSettings) -> Estimate:
    """At evaluation batch norm scales channel ``c`` by ``gamma_c / sqrt(var_c + eps)``: the norm is the largest."""
    m = call.module
    if m.running_var is None:
        raise IntriguingError(f"layer {call.name!r}: batch norm without running statistics depends on the whole "
                              "batch, so it has no per-example Lipschitz constant")
    scale = (m.running_var.detach().double() + m.eps).rsqrt()
    if m.weight is not None:
        scale = scale * m.weight.detach().double()
    value = float(scale.abs().max())
    return Estimate(value, value, "max |gamma| / sqrt(running var + eps)")


# --- the public entry points -------------------------------------------------------------------------------


def layer_bounds(model: nn.Module, input_shape: Sequence[int], *, tol: float = 1e-5, max_steps: int = 1000,
                 seed: int = 0, progress: bool = False) -> list[LayerBound]:
    """Walk ``model``'s layers in execution order and bound each one (see the module docstring).

    ``input_shape`` is one input's shape without the batch dimension, e.g. ``(1, 28, 28)``. Exact
    norms of linear layers are computed to relative residual ``tol`` (see :class:`NormSettings`;
    Lanczos seeded by ``seed``, at most ``max_steps`` steps per layer). The model is evaluated in
    eval mode.
    """
    if not 0 < tol < 1:
        raise IntriguingError(f"tol: expected a relative tolerance in (0, 1), got {tol!r}")
    check_finite_parameters(model)
    settings = NormSettings(tol=tol, max_steps=max_steps, seed=seed)
    rows = []
    with evaluation_mode(model):
        calls = trace_layers(model, input_shape)
        functions = [_bound_function(call) for call in calls]  # an unknown kind fails before any work
        for call, function in tqdm(list(zip(calls, functions)), desc="layers", disable=not progress, leave=False):
            start = time.perf_counter()
            estimate = function(call, settings)
            rows.append(_record(call, estimate, time.perf_counter() - start))
    return rows


def _record(call: LayerCall, estimate: Estimate, seconds: float) -> LayerBound:
    bound, exact = float(estimate.bound), float(estimate.exact)
    ratio = bound / exact if exact > 0 else (1.0 if bound == 0 else math.inf)
    stride = getattr(call.module, "stride", None)
    if stride is not None:
        stride = _as_pair(stride)
        stride = stride[0] if stride[0] == stride[1] else list(stride)
    return LayerBound(name=call.name, kind=type(call.module).__name__, size=_size(call.module),
                      input_shape=list(call.input_shape), output_shape=list(call.output_shape), stride=stride,
                      bound=bound, exact=exact, ratio=ratio, method=estimate.method, seconds=seconds)


def _size(module: nn.Module) -> str:
    """Table 5's size column: ``C x kh x kw x D`` for convolutions, ``in x out`` for linear layers."""
    if isinstance(module, nn.Conv2d):
        return f"{module.in_channels}x{module.kernel_size[0]}x{module.kernel_size[1]}x{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"{module.in_features}x{module.out_features}"
    kernel = getattr(module, "kernel_size", None)
    return f"{_as_pair(kernel)[0]}x{_as_pair(kernel)[1]}" if kernel is not None else ""


def _label(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


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
        with torch.no_grad():
            classes = model(images[:1]).shape[-1]
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
    """:func:`layer_bounds`, the product bounds and the empirical lower bounds in one record.

    ``images`` (optional) feed :func:`gradient_lower_bound`, ``pairs = (x, x')`` (optional, e.g.
    adversarial pairs) :func:`pair_ratios`.
    """
    start = time.perf_counter()
    layers = layer_bounds(model, input_shape, tol=tol, seed=seed, progress=progress)
    table = SpectralTable(model=name, input_shape=list(input_shape), layers=layers,
                          product_bound=math.prod(layer.bound for layer in layers),
                          product_exact=math.prod(layer.exact for layer in layers))
    if images is not None:
        table.gradient_lower_bound, table.images = gradient_lower_bound(model, images), len(images)
    if pairs is not None:
        table.pair_lower_bound, table.pairs = float(pair_ratios(model, *pairs).max()), len(pairs[0])
    table.seconds = time.perf_counter() - start
    return table


def adversarial_pairs(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                      **attack: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and their minimal adversarial examples (Section 4.1's L-BFGS, untargeted), where the attack succeeded.

    Inputs the model already misclassifies "succeed" unchanged and are left out, like failures.
    ``attack`` holds :class:`intriguing.attacks.LBFGS` keyword arguments.
    """
    from intriguing.attacks import LBFGS

    result = LBFGS(**attack)(model, x, labels=labels)
    keep = result.success & (result.adversarial != x).flatten(1).any(dim=1)
    return x[keep], result.adversarial[keep]


# --- the "table5" section of ``intriguing reproduce`` ---------------------------------------------------------


@dataclass(frozen=True)
class Table5Settings:
    """One preset's configuration of the ``table5`` section (hashed: a change recomputes it).

    ``alexnet``: bound the seeded random AlexNet (tens of seconds); ``models``: MNIST zoo models,
    trained on the full training set with ``seed`` (``limit`` / ``overrides`` shrink training for
    quick presets); ``images``: test images for the gradient lower bound; ``pairs``: test images
    attacked for adversarial pairs (keyword arguments ``attack`` for :class:`~intriguing.attacks.LBFGS`);
    ``tol``: Lanczos tolerance of the exact norms.
    """

    alexnet: bool
    models: tuple[str, ...] = ("FC100-100-10", "ConvNet")
    images: int = 1000
    pairs: int = 100
    limit: int | None = None
    overrides: dict[str, Any] | None = None
    attack: dict[str, Any] = field(default_factory=dict)
    tol: float = 1e-5
    seed: int = 0


SETTINGS = preset_settings(
    # Smoke: the FC net only, trained as the other sections' smoke runs train it (shared from the cache).
    smoke=Table5Settings(alexnet=False, models=("FC100-100-10",), images=200, pairs=20, limit=1000,
                         overrides={"epochs": 3, "batch_size": 32, "pretrain_epochs": 1},
                         attack={"max_solves": 10, "max_iter": 50}),
    default=Table5Settings(alexnet=True),
    full=Table5Settings(alexnet=True, models=("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10",
                                              "AE400-10", "ConvNet"), images=10_000, pairs=1000),
)


def _run(ctx: Context, s: Table5Settings, results: dict[str, Any]) -> dict[str, Any]:
    """AlexNet's table (random weights) beside the paper's, then each MNIST model's with its lower bounds."""
    result: dict[str, Any] = {
        "paper": paper("table5")["rows"], "alexnet": None, "mnist": [],
        "protocol": {"alexnet_weights": f"random: PyTorch's default initialisation, seed {s.seed}",
                     "mnist_training": {"limit": s.limit, "overrides": s.overrides, "on": "train", "seed": s.seed},
                     "gradient_images": f"first {s.images} test images", "pairs": f"first {s.pairs} test images, "
                     f"untargeted LBFGS {s.attack}", "tol": s.tol},
    }
    steps = len(s.models) + s.alexnet
    if s.alexnet:
        ctx.stage("AlexNet's layers", 0.0)
        result["alexnet"] = spectral_table(alexnet.alexnet(seed=s.seed), alexnet.INPUT_SHAPE, name="AlexNet",
                                           tol=s.tol, seed=s.seed)
    images, labels = data.load_mnist("test", ctx.data_dir)
    for i, name in enumerate(s.models):
        ctx.stage(f"{name}: train, attack, bound", (i + s.alexnet) / steps)
        model = zoo.trained(name, seed=s.seed, limit=s.limit, overrides=s.overrides, data_dir=ctx.data_dir,
                            cache=ctx.cache, progress=False)
        pairs = adversarial_pairs(model, images[: s.pairs], labels[: s.pairs], **s.attack) if s.pairs else None
        result["mnist"].append(spectral_table(model, zoo.INPUT_SHAPE, name=name, images=images[: s.images],
                                              pairs=pairs if pairs is not None and len(pairs[0]) else None,
                                              tol=s.tol, seed=s.seed))
    return to_jsonable(result)


def paper_bounds(rows: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """The paper's Table 5 upper bounds (trained AlexNet) by our AlexNet's layer names (``conv1`` ... ``fc3``).

    ``rows`` are Table 5's rows as stored with a result (default: the shipped copy of the paper's).
    """
    rows = paper("table5")["rows"] if rows is None else rows
    return {name: row["upper_bound"] for name, row in zip(alexnet.TABLE5_LAYERS, rows)}


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.5g}"


def _lower_bound(table: dict[str, Any]) -> float | None:
    found = [b for b in (table["gradient_lower_bound"], table["pair_lower_bound"]) if b is not None]
    return max(found) if found else None


def layers_markdown(table: dict[str, Any], published: dict[str, float] | None = None) -> str:
    """A :class:`SpectralTable` (as JSON) as a Markdown table, with the paper's bounds as a column if given."""
    header = ["layer", "kind", "size", "stride", "in → out"]
    header += ["paper's bound (trained)"] if published is not None else []
    header += ["our bound", "exact norm", "bound / exact"]
    rows = []
    for layer in table["layers"]:
        shapes = f"{'x'.join(map(str, layer['input_shape']))} → {'x'.join(map(str, layer['output_shape']))}"
        stride = layer["stride"]
        stride = "—" if stride is None else "x".join(map(str, stride)) if isinstance(stride, list) else str(stride)
        row = [f"`{layer['name']}`", layer["kind"], layer["size"], stride, shapes]
        row += [_number(published.get(layer["name"]))] if published is not None else []
        row += [_number(layer["bound"]), _number(layer["exact"]), f"{layer['ratio']:.4f}"]
        rows.append(row)
    product = (f"Product of the bounds **{_number(table['product_bound'])}**; of the exact norms "
               f"**{_number(table['product_exact'])}**.")
    return report.table(header, rows) + "\n\n" + product


def _render(result: dict[str, Any], ctx: Context) -> str:
    introduction = (
        "Section 4.3 bounds every layer by an operator norm: ours are the paper's Fourier formula (stride-aware, "
        "evaluated so that it bounds the layer with its own padding), next to the exact norm of the layer as "
        "implemented (Lanczos through `conv2d` / `conv_transpose2d`). The bound is never below the exact norm; their "
        "ratio shows how much zero padding loosens it. Max pooling with overlapping 3x3 windows of stride 2 is "
        "2-Lipschitz, not 1; local response normalisation is `k^-beta` = 0.59."
    )
    return "\n\n".join([introduction, _alexnet_markdown(result), _mnist_markdown(result["mnist"])]).strip()


def _alexnet_markdown(result: dict[str, Any]) -> str:
    """Table 5: the paper's bounds for the trained network beside ours for random weights."""
    if result["alexnet"] is None:
        return "AlexNet (Table 5 itself) is bounded in the `default` and `full` presets only."
    return "\n\n".join([
        "### AlexNet (Krizhevsky et al. 2012), the paper's Table 5",
        "**Our weights are random** (seeded; no ImageNet weights ship with this toolkit), so our values differ from "
        "the paper's, which are those of the trained network: what is comparable is the method, not the numbers. "
        "`intriguing lipschitz alexnet --weights FILE` applies it to trained weights.",
        layers_markdown(result["alexnet"], paper_bounds(result["paper"])),
    ])


def _mnist_markdown(tables: list[dict[str, Any]]) -> str:
    """Each MNIST model's layers, then how far its product bound is from what the network does."""
    if not tables:
        return ""
    parts = ["### The MNIST models"]
    for table in tables:
        parts += [f"**{table['model']}**", layers_markdown(table)]
    header = ["model", "product of bounds", "product of exact norms", "max ‖∂f/∂x‖ over data",
              "max ‖f(x′)−f(x)‖/‖x′−x‖ over adversarial pairs", "product of bounds / best lower bound"]
    rows = [[t["model"], _number(t["product_bound"]), _number(t["product_exact"]),
             f"{_number(t['gradient_lower_bound'])} ({t['images']} images)",
             f"{_number(t['pair_lower_bound'])} ({t['pairs']} pairs)",
             _number(t["product_bound"] / _lower_bound(t)) if _lower_bound(t) else "—"] for t in tables]
    parts += ["How loose the product is: the network's Lipschitz constant lies between the largest lower bound "
              "(data gradients, adversarial pairs) and the product of the exact norms.", report.table(header, rows)]
    return "\n\n".join(parts)


def _claims(result: dict[str, Any]) -> list[Claim]:
    tables = [t for t in (result["alexnet"], *result["mnist"]) if t is not None]
    convolutions = [layer for t in tables for layer in t["layers"] if layer["kind"] == "Conv2d"]
    claims = []
    if convolutions:
        worst = min(layer["bound"] / layer["exact"] for layer in convolutions)
        claims.append(Claim(
            "table5", "Section 4.3: the Fourier formula upper-bounds the operator norm of each convolution",
            holds=worst >= 1 - 1e-6,
            evidence=f"{len(convolutions)} convolutions; smallest bound / exact norm {worst:.4f}"))
    measured = [t for t in result["mnist"] if _lower_bound(t) is not None]
    if measured:
        claims.append(Claim(
            "table5", "Section 4.3: the product of the layers' bounds bounds the network's instability",
            holds=all(t["product_bound"] >= _lower_bound(t) for t in measured),
            evidence="; ".join(f"{t['model']}: product {_number(t['product_bound'])} ≥ lower bound "
                               f"{_number(_lower_bound(t))}" for t in measured)))
    return claims


SECTION = register(Section(
    key="table5", title="Table 5: layer-wise Lipschitz bounds (Section 4.3)", run=_run, render=_render,
    settings=SETTINGS, claims=_claims, estimate_seconds={"smoke": 5, "default": 180, "full": 900},
))
