"""Where units of work run: in this process, or on the workers of a Ray cluster.

A unit of work (:mod:`intriguing.runner.work`) is a module-level function applied to a small frozen
spec that the worker rebuilds everything from: no live model ever crosses a process boundary. A
:class:`Backend` maps such a function over a list of specs and returns the results in the specs'
order, telling the caller about each result as it arrives (``on_result``), so that the caller can
store it at once (a killed run keeps what finished) and advance the progress line.

Both backends run each unit under the same conditions - ``threads`` torch threads (one by
default) and subnormal floats flushed (:func:`worker_setup`) - and the caller fixes how the work
is cut into units (e.g. shards of a fixed number of examples), so the numbers are bitwise the same
whatever the backend and the number of workers.
"""

from __future__ import annotations

import os

from intriguing.errors import IntriguingError
from intriguing.numerics import flush_subnormals
from intriguing.runner.backends.base import Backend, local_cores, ray_installed, worker_setup


WORKERS_ENV = "INTRIGUING_WORKERS"


def default_workers() -> int:
    """``$INTRIGUING_WORKERS`` when set, else all local cores when Ray is installed, else 1 (in-process)."""
    chosen = os.environ.get(WORKERS_ENV, "").strip()
    if not chosen:
        return local_cores() if ray_installed() else 1
    if not chosen.isdigit() or int(chosen) < 1:
        raise IntriguingError(f"{WORKERS_ENV}: expected a whole number >= 1, got {chosen!r}")
    return int(chosen)


def create(workers: int | None = None, ray_address: str | None = None, *, threads: int = 1,
           gpus_per_unit: float = 0.0) -> Backend:
    """The backend for ``workers`` local processes, or for the Ray cluster at ``ray_address``.

    One worker and no address run in this process (no Ray needed); more workers start a local Ray
    instance; an address (``ray start --head`` prints it; ``"auto"`` finds a local one) joins a
    cluster, whose CPUs set how many units run at once unless ``workers`` says fewer. On Ray each
    unit asks for ``gpus_per_unit`` GPUs (e.g. 0.25: four units share one), so Ray places units
    only where a GPU is free; in-process the unit simply uses this machine's.
    """
    if isinstance(gpus_per_unit, bool) or not isinstance(gpus_per_unit, int | float) or not 0 <= gpus_per_unit <= 8:
        raise IntriguingError(f"gpus per unit: expected a number from 0 to 8 (e.g. 1, or 0.25 to share a GPU "
                              f"between four units), got {gpus_per_unit!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise IntriguingError(f"workers: expected a whole number >= 1, got {workers!r}")
    # This process evaluates what the units return: subnormals flushed here too, whatever the backend.
    flush_subnormals()
    if ray_address is None and (workers or default_workers()) == 1:
        from intriguing.runner.backends.inprocess import InProcess
        return InProcess(threads=threads)
    if not ray_installed():
        raise IntriguingError(
            f"{workers} workers need Ray, which is not installed: pip install 'intriguing[ray]' "
            "(or use --workers 1)")
    from intriguing.runner.backends.ray import RayBackend
    return RayBackend(workers=workers, address=ray_address, threads=threads, gpus_per_unit=gpus_per_unit)


__all__ = ["WORKERS_ENV", "Backend", "create", "default_workers", "local_cores", "ray_installed", "worker_setup"]
