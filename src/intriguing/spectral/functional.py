"""Functional operations of a traced forward pass, read as layers or as merges of branches (Section 4.3).

A graph traced by :func:`intriguing.spectral.trace_graph` calls functions as well as modules:
``torch.flatten``, ``F.relu``, ``x + shortcut``, ``torch.cat``, ``x.mean((2, 3))``. Each known one
is translated here into either

* a :class:`Unary` map of one input: an equivalent module (``F.relu6`` -> ``nn.ReLU6``,
  ``F.adaptive_avg_pool2d`` -> ``nn.AdaptiveAvgPool2d``, a reshape -> :class:`Reshape`, ...), whose
  bound the per-kind registry already knows, or
* a :class:`Merge` of branches: a weighted sum (additions, subtractions, scaling by a constant)
  or a concatenation, composed by the rules of :mod:`intriguing.spectral.graph`.

Anything else (e.g. a product of two branches, which has no global Lipschitz constant) is refused
by the tracer with the operation's name.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from intriguing.spectral.graph import CONCAT, SUM

# --- stand-in modules for functional operations ------------------------------------------------------------


class Functional(nn.Module):
    """A functional operation of the forward pass as a module, so that it gets a row and a registered bound."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


class Reshape(Functional):
    """A reshape, permutation or basic indexing: moves (or drops) entries without changing them."""


class Mean(Functional):
    """An average over some dimensions (e.g. global average pooling written as ``x.mean((2, 3))``)."""


class Scale(Functional):
    """Multiplication by a constant tensor broadcast against the input (e.g. a learned per-channel scale)."""

    def __init__(self, factor: torch.Tensor):
        super().__init__(lambda x: x * self.factor)
        self.register_buffer("factor", factor.detach().clone())


# --- what an operation is ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unary:
    """A layer: ``module`` applied to the variable argument ``source``; ``kind`` names it in the table."""

    source: Any
    module: nn.Module
    kind: str


@dataclass(frozen=True)
class Merge:
    """A weighted sum (``how`` = SUM) or a concatenation (CONCAT) of the variable arguments ``terms``."""

    how: str
    terms: tuple[tuple[Any, float], ...]


@dataclass(frozen=True)
class Parts:
    """A tuple of pieces of ``source`` (``chunk``, ``split``, ``unbind``): each piece is a restriction of it."""

    source: Any


@dataclass(frozen=True)
class Op:
    """One traced call: its arguments (variable ones still graph nodes, the rest their values) and shapes."""

    label: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    is_variable: Callable[[Any], bool]
    numel: Callable[[Any], int]
    out_numel: int


class Refused(Exception):
    """An operation without a global Lipschitz constant (or unknown): the message says which and why."""


# --- translations -----------------------------------------------------------------------------------------------


def _unary(factory: Callable[..., nn.Module]) -> Callable[[Op], Unary]:
    """An operation ``f(input, *options)`` that is the module ``factory(*options)`` applied to ``input``."""

    def translate(op: Op) -> Unary:
        source, *rest = op.args
        return Unary(source, factory(*rest, **op.kwargs), op.label)

    return translate


def _reshape(op: Op) -> Unary:
    source, *rest = op.args
    return Unary(source, Reshape(lambda x: _call(op.label, x, rest, op.kwargs)), op.label)


def _call(label: str, x: torch.Tensor, rest: list, kwargs: dict) -> torch.Tensor:
    name = label.rsplit(".", 1)[-1]
    return getattr(x, name)(*rest, **kwargs)


def _alias(op: Op) -> Merge:
    """A copy of the input (``clone``, ``contiguous``, ``float``): the same values, no row of its own."""
    return Merge(SUM, ((op.args[0], 1.0),))


def _pad(op: Op) -> Unary:
    """Constant padding copies each entry once (Lipschitz 1); reflect / replicate / circular padding repeat entries."""
    source, pad, *rest = op.args
    mode = op.kwargs.get("mode", rest[0] if rest else "constant")
    if mode != "constant":
        raise Refused(f"F.pad(mode={mode!r}) repeats entries; only constant padding is supported")
    return Unary(source, Reshape(lambda x: F.pad(x, pad, *rest, **op.kwargs)), op.label)


def _getitem(op: Op) -> Unary | Merge:
    source, index = op.args
    if not op.is_variable(source):
        raise Refused(f"{op.label}: indexing with a tensor that depends on the input")
    items = index if isinstance(index, tuple) else (index,)
    if not all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items):
        raise Refused(f"{op.label} with index {index!r}: only basic indexing (ints, slices, None, ...) never "
                      "repeats an entry")
    return Unary(source, Reshape(lambda x: x[index]), "x[...]")


def _mean(op: Op) -> Unary:
    source, *rest = op.args
    if op.kwargs.get("dtype") is not None:
        raise Refused(f"{op.label} with a dtype")
    return Unary(source, Mean(lambda x: x.mean(*rest, **op.kwargs)), op.label)


def _dropout(p: float = 0.5, training: bool = True, inplace: bool = False) -> nn.Module:
    if training:
        raise Refused("F.dropout(training=True) draws a new mask at every call: pass training=self.training")
    return nn.Dropout(p)


def _max_pool(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False) -> nn.Module:
    if return_indices:
        raise Refused("F.max_pool2d(return_indices=True) returns a tuple")
    return nn.MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)


def _sum(sign: float) -> Callable[[Op], Merge]:
    """``a + alpha * b`` (``sign`` -1 for subtraction); a constant term only shifts the output."""

    def translate(op: Op) -> Merge:
        a, b = op.args[:2]
        alpha = op.args[2] if len(op.args) > 2 else op.kwargs.get("alpha", 1)
        return Merge(SUM, tuple((x, w * _spread(op, x)) for x, w in ((a, 1.0), (b, abs(sign * alpha)))
                                if op.is_variable(x)))

    return translate


def _spread(op: Op, x: Any) -> float:
    """``sqrt(k)`` when ``x`` is broadcast to ``k`` times its number of entries."""
    return math.sqrt(op.out_numel / op.numel(x))


def _negate(op: Op) -> Merge:
    return Merge(SUM, ((op.args[0], 1.0),))


def _product(divide: bool) -> Callable[[Op], Unary | Merge]:
    """``x * c`` or ``x / c`` for a constant ``c``: a scaling. A product of two branches is refused."""

    def translate(op: Op) -> Unary | Merge:
        a, b = op.args[:2]
        if op.is_variable(a) and op.is_variable(b):
            raise Refused(f"{op.label} of two tensors that both depend on the input (a gate, attention): such a "
                          "product has no global Lipschitz constant")
        if op.is_variable(b):
            if divide:
                raise Refused(f"{op.label}: dividing by a tensor that depends on the input")
            a, b = b, a
        if isinstance(b, torch.Tensor) and b.numel() > 1:
            return Unary(a, Scale(b.reciprocal() if divide else b), "x * c")
        factor = float(b)
        factor = 1.0 / factor if divide else factor
        return Merge(SUM, ((a, abs(factor) * _spread(op, a)),))

    return translate


def _concatenate(op: Op) -> Merge:
    tensors = op.args[0]
    return Merge(CONCAT, tuple((x, 1.0) for x in tensors if op.is_variable(x)))


def _parts(op: Op) -> Parts:
    return Parts(op.args[0])


# Operations that are a module applied to their first argument: the factory takes the other arguments.
MODULES: dict[Any, Callable[..., nn.Module]] = {
    F.relu: lambda inplace=False: nn.ReLU(), torch.relu: nn.ReLU, "relu": nn.ReLU,
    F.relu6: lambda inplace=False: nn.ReLU6(),
    F.hardtanh: lambda min_val=-1.0, max_val=1.0, inplace=False: nn.Hardtanh(min_val, max_val),
    F.leaky_relu: lambda negative_slope=0.01, inplace=False: nn.LeakyReLU(negative_slope),
    F.silu: lambda inplace=False: nn.SiLU(),
    F.gelu: lambda approximate="none": nn.GELU(approximate=approximate),
    F.hardswish: lambda inplace=False: nn.Hardswish(),
    F.hardsigmoid: lambda inplace=False: nn.Hardsigmoid(),
    torch.sigmoid: nn.Sigmoid, F.sigmoid: nn.Sigmoid, "sigmoid": nn.Sigmoid,
    torch.tanh: nn.Tanh, F.tanh: nn.Tanh, "tanh": nn.Tanh,
    F.dropout: _dropout,
    F.adaptive_avg_pool2d: nn.AdaptiveAvgPool2d,
    F.avg_pool2d: nn.AvgPool2d,
    F.max_pool2d: _max_pool,
}

RESHAPES = ("flatten", "view", "reshape", "permute", "transpose", "squeeze", "unsqueeze")

OPERATIONS: dict[Any, Callable[[Op], Unary | Merge | Parts]] = {
    **{target: _unary(factory) for target, factory in MODULES.items()},
    **{getattr(torch, name): _reshape for name in RESHAPES if name != "view"},
    **{name: _reshape for name in RESHAPES},
    "clone": _alias, torch.clone: _alias, "contiguous": _alias, "float": _alias,
    F.pad: _pad,
    operator.getitem: _getitem,
    torch.mean: _mean, "mean": _mean,
    operator.add: _sum(1), operator.iadd: _sum(1), torch.add: _sum(1), "add": _sum(1), "add_": _sum(1),
    operator.sub: _sum(-1), operator.isub: _sum(-1), torch.sub: _sum(-1), "sub": _sum(-1), "sub_": _sum(-1),
    operator.neg: _negate, torch.neg: _negate, "neg": _negate,
    operator.mul: _product(False), operator.imul: _product(False), torch.mul: _product(False),
    "mul": _product(False), "mul_": _product(False),
    operator.truediv: _product(True), operator.itruediv: _product(True), torch.div: _product(True),
    "div": _product(True), "div_": _product(True),
    torch.cat: _concatenate, torch.concat: _concatenate, torch.concatenate: _concatenate,
    torch.chunk: _parts, torch.split: _parts, torch.unbind: _parts, "chunk": _parts, "split": _parts,
    "unbind": _parts,
}

# Queries whose results depend on the input's shape only, never on its values.
SHAPE_QUERIES: tuple[Any, ...] = ("size", "dim", "numel", getattr, len)


def label(target: Any) -> str:
    """How an operation is named in rows and errors: ``F.relu``, ``torch.flatten``, ``Tensor.view``, ..."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    name = getattr(target, "__name__", repr(target))
    module = (getattr(target, "__module__", None) or "").replace("_operator", "operator")
    if module == "torch.nn.functional" or getattr(F, name, None) is target:
        return f"F.{name}"
    if module.startswith("torch") or getattr(torch, name, None) is target:
        return f"torch.{name}"
    return f"{module}.{name}" if module else name
