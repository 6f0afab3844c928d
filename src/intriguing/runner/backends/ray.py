"""The Ray backend: units run as Ray tasks, on local worker processes or on a cluster's nodes.

Plain tasks suit our units: each is a few seconds to minutes of work on a spec of a few hundred
bytes, and rebuilding its model from the checkpoint cache costs milliseconds, so actor pools
would add state without saving time. A task whose worker process dies (killed, out of memory, a
lost node) is run again by Ray (``MAX_RETRIES``); an exception raised by the unit itself is not
retried (it would fail again) and reaches the caller as the unit's own exception type.

Results come back through Ray's object store; the caller stores them under the run folder on
this machine, so only the checkpoint cache benefits from storage every node sees.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray

from intriguing.errors import IntriguingError
from intriguing.numerics import flush_subnormals
from intriguing.runner.backends.base import OnResult, check_after, local_cores, worker_setup

TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
# Tries of a unit after its worker died (a system failure, not an exception of the unit).
MAX_RETRIES = 3
# Units in flight per worker: enough to keep every worker busy, few enough that results waiting
# in the object store stay bounded (a worker holds one unit's data at a time).
IN_FLIGHT_PER_WORKER = 2


def unit_resources(gpus_per_unit: float = 0.0) -> dict[str, float]:
    """What each unit asks Ray for: one CPU (its one torch thread), and ``gpus_per_unit`` GPUs when the
    units run on CUDA (Ray then sets each worker's ``CUDA_VISIBLE_DEVICES`` to the GPU it was given)."""
    return {"num_cpus": 1, **({"num_gpus": gpus_per_unit} if gpus_per_unit else {})}


def _run_unit(function: Callable[[Any], Any], spec: Any, threads: int) -> Any:
    """One unit on a worker: the same torch and thread settings as in-process, then ``function(spec)``."""
    with worker_setup(threads):
        return function(spec)


@contextlib.contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Keep this process's SIGTERM handler across ``ray.init``.

    Ray's core worker installs a fatal-signal handler for SIGTERM that prints a C++ stack and exits,
    so a batch system's SIGTERM would skip the CLI's clean interruption (one line, exit status 143,
    the Ray instance shut down) that in-process runs get. The handler in place before is put back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler installed outside Python, nothing of ours to keep
            signal.signal(signal.SIGTERM, previous)


def _check_answers(address: str, timeout: float = 5.0) -> None:
    """Fail in one line unless something accepts a connection at ``address`` (``HOST:PORT``, or
    ``ray://HOST:PORT`` for Ray Client): ``ray.init`` would retry an unreachable head for minutes,
    printing its C++ client's warnings, before it gave up."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise IntriguingError(f"--ray-address {address!r}: expected HOST:PORT as 'ray start --head' prints it "
                              "(e.g. 10.0.0.5:6379), or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise IntriguingError(f"cannot join the Ray cluster at {address}: nothing answers there ({e.strerror or e}); "
                              "start the head node with 'ray start --head' and pass the address it prints") from None


class RayBackend:
    """Units as Ray tasks of one CPU each.

    Without ``address`` a local Ray instance with ``workers`` CPUs (default: all local cores) is
    started and shut down by :meth:`close`; with an address (``"auto"``, or ``HOST:PORT`` of
    ``ray start --head``) the cluster is joined and left as it was. When Ray is already initialised
    in this process (e.g. by a test or a notebook), that instance is used as it is.
    """

    def __init__(self, workers: int | None = None, address: str | None = None, *, threads: int = 1,
                 object_store_memory: int | None = None, gpus_per_unit: float = 0.0):
        self.threads = threads
        self._owned = not ray.is_initialized()
        if self._owned:
            self._start(workers, address, object_store_memory)
        available = int(ray.cluster_resources().get("CPU", 1))
        self.workers = min(workers, available) if workers else available
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus_per_unit > gpus:
            self.close()
            raise IntriguingError(f"each unit asks for {gpus_per_unit} GPU(s) but the Ray cluster has {gpus:g}: "
                                  "join a cluster with GPUs (--ray-address), or use --device cpu")
        self._task = ray.remote(_run_unit).options(**unit_resources(gpus_per_unit), max_retries=MAX_RETRIES,
                                                   retry_exceptions=False)
        # This process evaluates what the workers return: flush subnormals here too, as in-process does.
        flush_subnormals()

    @staticmethod
    def _start(workers: int | None, address: str | None, object_store_memory: int | None) -> None:
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if address is None:
            options.update(num_cpus=workers or local_cores(), object_store_memory=object_store_memory)
            # Ray turns token authentication on for a local instance and says so in a warning line; the
            # protection is kept, the line (which would break our one-line output) is not printed.
            logging.getLogger(TOKEN_SETUP_LOGGER).setLevel(logging.ERROR)
        if address not in (None, "auto"):
            _check_answers(address)
        try:
            with _sigterm_kept():
                ray.init(address=address, **options)
        except Exception as e:  # noqa: BLE001 - ray.init raises a bare Exception too (a node that timed out starting)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if address is None:
                raise IntriguingError(f"cannot start a local Ray instance: {reason}") from None
            raise IntriguingError(
                f"cannot join the Ray cluster at {address}: {reason}. A cluster started with 'ray start' checks a "
                "token: export RAY_AUTH_MODE=token here, with the head's ~/.ray/auth_token in ~/.ray/") from None

    def map(self, function: Callable[[Any], Any], specs: Sequence[Any], *,
            on_result: OnResult | None = None, after: Sequence[Sequence[int]] | None = None) -> list[Any]:
        """Run every unit, at most ``IN_FLIGHT_PER_WORKER * workers`` at a time, each submitted once the
        units it waits for (``after``) have finished; results in spec order."""
        waits = check_after(after, len(specs))
        results: list[Any] = [None] * len(specs)
        waiting = list(range(len(specs)))  # in order of submission
        finished: set[int] = set()
        running: dict[Any, int] = {}
        try:
            while waiting or running:
                for i in [i for i in waiting if finished.issuperset(waits[i])][: self._room(running)]:
                    waiting.remove(i)
                    running[self._task.remote(function, specs[i], self.threads)] = i
                done, _ = ray.wait(list(running), num_returns=1)
                i = running.pop(done[0])
                results[i] = ray.get(done[0])
                finished.add(i)
                if on_result is not None:
                    on_result(i, results[i])
        finally:
            for ref in running:  # an error or Ctrl-C: no orphan work left on the cluster
                ray.cancel(ref, force=True)
        return results

    def _room(self, running: dict[Any, int]) -> int:
        return IN_FLIGHT_PER_WORKER * self.workers - len(running)

    def close(self) -> None:
        """Shut down the Ray instance this backend started (a joined cluster keeps running)."""
        if self._owned and ray.is_initialized():
            ray.shutdown()
            self._owned = False

    def __repr__(self) -> str:
        return f"RayBackend(workers={self.workers}, threads={self.threads})"

