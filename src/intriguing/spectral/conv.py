"""The paper's Fourier bound on a convolution's operator norm, stride included (Section 4.3, Table 5).

Section 4.3 writes a stride-``Delta`` convolution, frequency by frequency, as a small matrix of the
filters' DFTs and bounds its norm by the largest of those matrices' norms. :func:`conv_fourier_bound`
evaluates that formula on a grid where it is a true upper bound for the layer's own padding;
:func:`conv2d_map` is the layer's linear part, whose exact norm :func:`~intriguing.spectral.operator_norm`
computes. Grouped and depthwise convolutions are block-diagonal: the bound is the largest over groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from intriguing.errors import IntriguingError

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
    stride, dilation = checked_pair(stride, "stride"), checked_pair(dilation, "dilation")
    pads = _padding_pairs(padding, kernel, dilation)
    if padding_mode not in PADDING_MODES:
        raise IntriguingError(f"padding_mode: expected one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
    grid, gain, notes = [], 1.0, []
    for size, (low, high), step, k, d in zip(checked_pair(input_size, "input_size"), pads, stride, kernel, dilation):
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
    note = f"Sec. 4.3 formula on a {grid[0]}x{grid[1]} grid ({kinds}), stride {pair_label(stride)}"
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


def checked_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``value`` (an int or a pair, as ``nn.Conv2d`` takes) as a pair of positive ints, or a clear error."""
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


def as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    """An int or a pair as a pair, unchecked (a module's own, already valid, attribute)."""
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def pair_label(pair: tuple[int, int]) -> str:
    """``"2"`` for an even pair, ``"2x1"`` otherwise."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"
