"""Subnormal floats: kept out of weights and flushed in every process the toolkit runs.

Weight decay drives the weights of inputs that are always zero (MNIST's border pixels) towards zero,
into the subnormal range below ``torch.finfo(float32).tiny``. A CPU computes with subnormals an order
of magnitude more slowly (about 17x per evaluation of the zoo's FC100-100-10), in training, attacks
and evaluation alike, while they change no result that matters: they are below 1e-38. So trained
weights have them set to zero before they are used or stored, and the command line and every worker
flush subnormal results of arithmetic to zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def flush_subnormals() -> None:
    """Make this process flush subnormal float results to zero (where the CPU supports it)."""
    torch.set_flush_denormal(True)


def flushing() -> bool:
    """Whether this process flushes subnormal results to zero now: torch has no getter for the
    setting, so it is read by a probe (a subnormal times one is zero exactly when flushing is on)."""
    return float(torch.tensor([1e-39], dtype=torch.float32) * 1.0) == 0.0


@contextlib.contextmanager
def _flush_set_to(on: bool) -> Iterator[None]:
    """Run the block with flushing ``on`` or off, then restore the caller's setting."""
    before = flushing()
    torch.set_flush_denormal(on)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def subnormals_flushed() -> contextlib.AbstractContextManager[None]:
    """For speed (the attack's hot path): values below ~1e-38 change no attack result."""
    return _flush_set_to(True)


def subnormals_kept() -> contextlib.AbstractContextManager[None]:
    """For exact answers (the oracles): a bound of 1e-310 and a bound of 0 decide whether a neuron is
    stable, and flushing one but not the other makes a feasible problem look infeasible."""
    return _flush_set_to(False)


@torch.no_grad()
def zero_subnormals_(tensor: torch.Tensor) -> int:
    """Set the subnormal entries of a floating tensor to zero in place; returns how many there were."""
    if not tensor.is_floating_point():
        return 0
    subnormal = (tensor != 0) & (tensor.abs() < torch.finfo(tensor.dtype).tiny)
    count = int(subnormal.sum())
    if count:
        tensor[subnormal] = 0
    return count


def zero_subnormal_weights_(model: nn.Module) -> int:
    """Zero every subnormal parameter and buffer entry of ``model`` in place; returns how many."""
    return sum(zero_subnormals_(t) for t in (*model.parameters(), *model.buffers()))


def count_subnormals(model: nn.Module) -> int:
    """How many parameter and buffer entries of ``model`` are subnormal."""
    return sum(int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum())
               for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
