"""Units of work whose results outlive a killed run: each kept in a file as it arrives, read back on a rerun.

A section is stored only once it has finished (:mod:`intriguing.runner.storage`). For the full
preset's longest sections that is too coarse: 18 adversarial-training runs of about 20 minutes each,
50 exact problems with a 10-minute limit each. A run killed in their middle lost hours of work. Their
units are kept one file each, ``OUT/units/<unit>-<key>.json``, keyed by the unit's spec and the
library's code (as attack shards and checkpoints are), so a rerun redoes only the units that were
in flight.

Every result, fresh or read back, goes through the same JSON form and the same ``rebuild``, so a
resumed run gives the numbers of an uninterrupted one. These files keep NaN (an unsolved problem's
distortion) as NaN; only this module reads them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from intriguing import records
from intriguing.errors import IntriguingError
from intriguing.runner.backends import Backend
from intriguing.versions import code_version

# The library's code: a change to any of it can change a stored section's or unit's numbers.
LIBRARY = ("intriguing.attacks", "intriguing.transfer", "intriguing.units", "intriguing.spectral",
           "intriguing.advtrain", "intriguing.training", "intriguing.architectures", "intriguing.zoo",
           "intriguing.data", "intriguing.stats", "intriguing.seeding", "intriguing.checkpoint",
           "intriguing.oracles", "intriguing.chains", "intriguing.numerics", "intriguing.models",
           "intriguing.preprocessing", "intriguing.alexnet", "intriguing.efficientnet", "intriguing.imagenet",
           "intriguing.devices", "intriguing.runner.work")


def library_version() -> str:
    """Hash of the library code whose results a stored section or unit holds."""
    return code_version(*LIBRARY)


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a stored record without its digest: a flipped digit is still valid JSON, this is not."""
    body = {k: v for k, v in record.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def unit_key(function: Callable[[Any], Any], spec: Any, device: str = "cpu") -> str:
    """Names what a unit's result depends on: the unit, its spec (a frozen dataclass, whose ``repr``
    holds every setting) and the library code; another device gives other floats."""
    blob = json.dumps({"unit": f"{function.__module__}.{function.__qualname__}", "spec": repr(spec),
                       "library": library_version(), **({"device": device} if device != "cpu" else {})},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def map_missing(backend: Backend, function: Callable[[Any], Any], specs: Sequence[Any], missing: Sequence[int],
                keep: Callable[[int, Any], None], on_done: Callable[[int], None] | None = None) -> None:
    """``function`` over ``specs[i]`` for each ``i`` in ``missing`` on ``backend``. Each result goes to
    ``keep(i, result)`` as it arrives (to be stored at once, so a kill loses only the units in flight),
    then ``on_done(count)`` hears how many of ``specs`` are finished, those not missing included."""
    done = len(specs) - len(missing)

    def arrived(j: int, result: Any) -> None:
        nonlocal done
        keep(missing[j], result)
        done += 1
        if on_done is not None:
            on_done(done)

    backend.map(function, [specs[i] for i in missing], on_result=arrived)


def kept_map(backend: Backend, function: Callable[[Any], Any], specs: Sequence[Any], folder: Path,
             rebuild: Callable[[Any], Any], *, device: str = "cpu",
             on_done: Callable[[int], None] | None = None) -> list[Any]:
    """``function`` over ``specs`` on ``backend``, each result kept in ``folder`` as it arrives and read
    back instead of recomputed on a rerun; ``rebuild`` makes a result from its JSON form (e.g. ``dict``,
    or a dataclass through :func:`intriguing.records.from_jsonable`). ``on_done(count)`` hears how many
    units are finished, the kept ones first."""
    paths = [kept_path(folder, function, spec, device) for spec in specs]
    kept = [read_record(path, "that unit") for path in paths]
    results: list[Any] = [None if record is None else rebuild(record["result"]) for record in kept]
    missing = [i for i, record in enumerate(kept) if record is None]
    if on_done is not None and len(missing) < len(specs):
        on_done(len(specs) - len(missing))

    def keep(i: int, result: Any) -> None:
        results[i] = rebuild(write_kept(paths[i], result))

    map_missing(backend, function, specs, missing, keep, on_done)
    return results


def kept_path(folder: Path, function: Callable[[Any], Any], spec: Any, device: str = "cpu") -> Path:
    """The file in ``folder`` that keeps the result of ``function(spec)`` run on ``device``."""
    return folder / f"{function.__name__}-{unit_key(function, spec, device)}.json"


def write_kept(path: Path, result: Any) -> Any:
    """Keep ``result`` at ``path`` (atomically, with its digest); returns the JSON form kept, from which
    a fresh result is rebuilt exactly as one read back."""
    record = {"result": records.to_jsonable(result, nan_as_null=False)}
    record["digest"] = record_digest(record)
    records.write_bytes(path, (json.dumps(record) + "\n").encode())
    return record["result"]


def read_record(path: Path, what: str) -> dict[str, Any] | None:
    """A stored record (a dict with its ``result`` and ``digest``), or None where there is none to trust:
    absent, or damaged (reported, and ``what`` recomputed)."""
    if not path.is_file():
        return None
    try:
        record = records.read_json(path)
    except IntriguingError as e:
        warnings.warn(f"{e}; recomputing {what}", stacklevel=3)
        return None
    if not isinstance(record, dict) or "result" not in record:
        warnings.warn(f"{path} is not a stored result; recomputing {what}", stacklevel=3)
        return None
    if record.get("digest") != record_digest(record):
        warnings.warn(f"{path} is damaged (its digest does not match); recomputing {what}", stacklevel=3)
        return None
    return record
