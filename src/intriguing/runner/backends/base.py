"""What every backend shares: the :class:`Backend` protocol and the set-up of a process that runs units."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import threadpoolctl
import torch

from intriguing.errors import IntriguingError
from intriguing.numerics import flush_subnormals

Spec = TypeVar("Spec")
Result = TypeVar("Result")
OnResult = Callable[[int, Any], None]


class Backend(Protocol):
    """Runs ``function(spec)`` for every spec; results come back in the order of ``specs``.

    ``on_result(i, result)`` is called in this process as each unit finishes (in the order they
    finish). ``workers`` is how many units may run at once. Units start in the order of ``specs``,
    except that unit ``i`` waits for the units ``after[i]`` (indices below ``i``, see
    :func:`check_after`) to finish: a unit that loads a model waits for the unit training it.
    """

    workers: int

    def map(self, function: Callable[[Spec], Result], specs: Sequence[Spec], *,
            on_result: OnResult | None = None, after: Sequence[Sequence[int]] | None = None) -> list[Result]: ...

    def close(self) -> None: ...


def check_after(after: Sequence[Sequence[int]] | None, count: int) -> list[tuple[int, ...]]:
    """``after`` of :meth:`Backend.map` for ``count`` units (``None``: none waits), checked: a unit may wait
    only for units listed before it, so units started in their order never wait for ever."""
    if after is None:
        return [()] * count
    if len(after) != count:
        raise ValueError(f"after: {len(after)} entries for {count} units")
    for i, waits in enumerate(after):
        if any(not 0 <= j < i for j in waits):
            raise ValueError(f"after[{i}] = {tuple(waits)}: a unit may wait only for units listed before it")
    return [tuple(waits) for waits in after]


@contextlib.contextmanager
def thread_limit(count: int | None) -> Iterator[None]:
    """``count`` threads inside the block, for torch and for the native thread pools that numpy, SciPy
    and the solvers they serve call (OpenBLAS, OpenMP: through threadpoolctl); the previous settings
    come back after (``None``: unchanged).

    A unit's numbers must not depend on where it runs. A Ray worker's native pools run 1 thread
    (Ray sets ``OMP_NUM_THREADS``), this process's as many as it has cores, and LipSDP's bounds came
    out 1e-5 apart between ``--workers 1`` and ``--workers 2``: BLAS rounds differently with 2 threads.
    """
    if count is None:
        yield
        return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise IntriguingError(f"threads: expected a whole number >= 1, got {count!r}")
    import scipy.linalg  # noqa: F401 - loads SciPy's BLAS now, so that the limit below reaches it too

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpoolctl.threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def worker_setup(threads: int = 1) -> Iterator[None]:
    """What every unit runs under, in process or in a Ray worker: :func:`thread_limit` ``threads`` and no
    subnormals.

    Subnormal floats (weights that weight decay drove towards zero) make every operation about
    17x slower on x86 CPUs; flushing them changes no result that matters and is the same in every
    worker, so the numbers do not depend on where a unit runs.
    """
    with thread_limit(threads):
        flush_subnormals()
        yield


def ray_installed() -> bool:
    """Whether the optional ``ray`` extra is importable here (``pip install 'intriguing[ray]'``)."""
    return importlib.util.find_spec("ray") is not None


def local_cores() -> int:
    """Cores this process may use (its CPU affinity, e.g. a batch system's allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
