"""The in-process backend: units run one after the other in this process (no Ray needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from intriguing.runner.backends.base import OnResult, check_after, worker_setup


class InProcess:
    """One worker: this process. Each unit runs under :func:`worker_setup` with ``threads`` threads, like
    a Ray worker, and the caller's thread counts are restored afterwards, so a unit's numbers are the same
    here as on a cluster."""

    workers = 1

    def __init__(self, threads: int = 1):
        self.threads = threads

    def map(self, function: Callable[[Any], Any], specs: Sequence[Any], *,
            on_result: OnResult | None = None, after: Sequence[Sequence[int]] | None = None) -> list[Any]:
        check_after(after, len(specs))  # in order, every unit's waits are over before it starts
        results = []
        with worker_setup(self.threads):  # the caller's own thread counts come back afterwards
            for i, spec in enumerate(specs):
                results.append(function(spec))
                if on_result is not None:
                    on_result(i, results[-1])
        return results

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"InProcess(threads={self.threads})"
