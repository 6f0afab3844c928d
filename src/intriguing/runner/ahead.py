"""Work run ahead of the sections: the zoo's models and the units that need nothing else, in one pool.

The runner computes sections one after the other, so a section's units share the workers only with
each other. A section of few, long units (Table 5's AlexNet, LipSDP on FC200-200-10) left all
workers but one idle while it ran, and the training that comes first left workers idle once its
last models were handed out. Units that need nothing but trained models (a section's ``ahead``)
therefore join the training: each is handed out once the models it needs are trained, after every
model, the sections whose units take longest first. The more workers, the more this matters: run in
its section, LipSDP's two units keep two of a cluster's workers busy; run ahead, they share all of
them with the training.

Same functions, same specs: the numbers are those of a run that computes the units in their
section. Their results wait in memory for it (``ctx.ran_ahead``), or, for kept units, in their kept
files, so that a killed run keeps those too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from intriguing.runner import work
from intriguing.runner.kept import kept_path, write_kept
from intriguing.runner.section import Context, Units, unit_id

Ahead = tuple[Units, Sequence[work.TrainModel]]  # units and the models they need


def call(unit: tuple[Callable[[Any], Any], Any]) -> Any:
    """Unit: ``function(spec)`` for a pair ``(function, spec)``, so that one map runs units of many functions."""
    function, spec = unit
    return function(spec)


def run_ahead(ctx: Context, models: Sequence[work.TrainModel], ahead: Sequence[Ahead],
              on_done: Callable[[int, int], None] | None = None) -> dict[tuple[Callable[[Any], Any], str], Any]:
    """Train ``models`` (:func:`~intriguing.runner.work.longest_first`) and run the ``ahead`` units on
    ``ctx.backend``, each after the models it needs; returns the results for ``ctx.ran_ahead`` (kept
    units go to their files instead). Units already kept, or listed twice, run once.
    ``on_done(done, total)`` hears the progress."""
    order = [models[i] for i in work.longest_first(models)]
    position = {model: i for i, model in enumerate(order)}
    units: list[tuple[Callable[[Any], Any], Any]] = [(work.train_model, model) for model in order]
    after: list[tuple[int, ...]] = [()] * len(order)
    arrive: list[Callable[[Any], Any]] = [functools.partial(work.store_checkpoint, model) for model in order]
    results: dict[tuple[Callable[[Any], Any], str], Any] = {}
    seen: set[tuple[Callable[[Any], Any], str]] = set()
    for group, needs in ahead:
        waits = tuple(sorted(position[model] for model in needs if model in position))
        for spec in group.specs:
            unit = unit_id(group.function, spec)
            path = kept_path(ctx.kept_units, group.function, spec, ctx.device) if group.keep else None
            if unit in seen or (path is not None and path.is_file()):
                continue
            seen.add(unit)
            units.append((group.function, spec))
            after.append(waits)
            arrive.append(functools.partial(write_kept, path) if path is not None
                          else functools.partial(results.__setitem__, unit))
    done = 0

    def arrived(i: int, result: Any) -> None:
        nonlocal done
        arrive[i](result)
        done += 1
        if on_done is not None:
            on_done(done, len(units))

    ctx.backend.map(call, units, on_result=arrived, after=after)
    return results
