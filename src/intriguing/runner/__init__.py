"""Run an ordered list of sections: resume what is stored, compute the rest, write ``results.json``.

The runner is generic: it knows sections (:mod:`intriguing.runner.section`), not the paper. Each
finished section is saved atomically to ``OUT/sections/<key>.json`` with a hash of its settings,
data and code (:mod:`intriguing.runner.storage`), so a run killed at any moment and started again
skips what is done and produces identical numbers (every section is seeded; trained models come
from the checkpoint cache; long sections keep their own intermediate files in ``ctx.artifacts``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from intriguing import records
from intriguing.records import check_writable
from intriguing.errors import IntriguingError, unknown_name_error
from intriguing.runner import work
from intriguing.runner.ahead import Ahead, run_ahead
from intriguing.runner.backends.base import thread_limit
from intriguing.runner.progress import Display
from intriguing.runner.section import PRESETS, Claim, Context, Section, Units, preset_settings
from intriguing.runner.storage import config_hash, stored, store

# The progress line's guess for training one zoo model before any section runs (the zoo's models take
# from seconds to minutes on one core; the bar rescales by the speed seen so far).
MODEL_ESTIMATE_SECONDS = 60.0
# The share of a section's estimate left to its own run once its units have run ahead (statistics, figures).
LEFT_AFTER_AHEAD = 0.1

__all__ = ["PRESETS", "Claim", "Context", "Section", "Units", "preset_settings", "run", "check_writable", "config_hash"]


def run(sections: Sequence[Section], ctx: Context, *, only: list[str] | None = None,
        threads: int | None = None) -> tuple[dict[str, Any], list[Section]]:
    """Compute the chosen sections not stored yet; return ``results.json``'s document and the shown sections.

    ``only`` restricts the run to some sections (and the sections they need); the document still
    includes every other section already stored in ``ctx.out`` with the current configuration.
    """
    if ctx.preset not in PRESETS:
        raise IntriguingError(f"unknown preset {ctx.preset!r}: choose one of {', '.join(PRESETS)}")
    check_writable(ctx.out, "output folder")
    chosen = _with_needs(list(sections), only) if only else list(sections)
    found = {s.key: stored(ctx, s) for s in sections}
    with thread_limit(threads):
        start = time.perf_counter()
        training = _compute_missing(ctx, chosen, found)
        shown = [s for s in sections if found[s.key] is not None]
        document = _document(ctx, shown, found, time.perf_counter() - start, training)
    records.write_json(ctx.out / "results.json", document)
    return document, shown


def _with_needs(chosen: list[Section], only: list[str]) -> list[Section]:
    known = {s.key for s in chosen}
    for key in only:
        if key not in known:
            raise unknown_name_error("section", key, known)
    wanted = set(only)
    for s in reversed(chosen):
        if s.key in wanted:
            wanted.update(s.needs)
    return [s for s in chosen if s.key in wanted]


def _compute_missing(ctx: Context, chosen: list[Section], found: dict[str, Any]) -> float:
    """Compute the chosen sections not in ``found`` (in order, under one progress line) and add them;
    return the seconds spent first, training the zoo models they need and running their units ahead."""
    missing = [s for s in chosen if found[s.key] is None]
    models = _untrained_models(ctx, missing)
    ahead = _units_ahead(ctx, missing)
    # A section that runs units ahead does most of its work there: its estimate moves with it.
    left = {s.key: LEFT_AFTER_AHEAD if s.ahead and ahead else 1.0 for s in missing}
    estimates = {s.key: s.estimate(ctx.preset) * left[s.key] for s in missing}
    first = MODEL_ESTIMATE_SECONDS * len(models) + sum(s.estimate(ctx.preset) - estimates[s.key] for s in missing)
    display = Display([first] * bool(models or ahead) + list(estimates.values()), ctx.progress)
    ctx = dataclasses.replace(ctx, on_stage=display.stage)
    results: dict[str, Any] = {}
    begin = time.perf_counter()
    try:
        if models or ahead:
            display.begin(f"training the {len(models)} models the sections need", first)
            ran = run_ahead(ctx, models, ahead, lambda done, total: ctx.stage(
                f"models trained and units run ahead: {done}/{total}", done / total))
            ctx = dataclasses.replace(ctx, ran_ahead=ran)
            display.end()
        training = time.perf_counter() - begin
        for section in chosen:
            if found[section.key] is None:
                display.begin(section.title, estimates[section.key])
                begin = time.perf_counter()
                outcome = section.run(ctx, section.chosen(ctx.preset), results)
                found[section.key] = store(ctx, section, outcome, time.perf_counter() - begin)
                display.end()
            results[section.key] = found[section.key]["result"]
    finally:
        display.close()
    return training


def _untrained_models(ctx: Context, sections: list[Section]) -> list[work.TrainModel]:
    """The zoo models that ``sections`` train or load and the cache lacks, each once, in order."""
    wanted = (m for s in sections if s.models is not None for m in s.models(ctx, s.chosen(ctx.preset)))
    return [m for m in dict.fromkeys(wanted) if not m.checkpoint().is_file()]


def _units_ahead(ctx: Context, sections: list[Section]) -> list[Ahead]:
    """The units ``sections`` can run ahead (:mod:`intriguing.runner.ahead`), each with the models its
    section needs, the sections whose units are expected to take longest first."""
    ahead = [(units, s.models(ctx, s.chosen(ctx.preset)) if s.models else (), s.estimate(ctx.preset))
             for s in sections if s.ahead for units in s.ahead(ctx, s.chosen(ctx.preset)) if units.specs]
    ahead.sort(key=lambda found: -found[2] / len(found[0].specs))
    return [(units, needs) for units, needs, _ in ahead]


def _document(ctx: Context, shown: list[Section], found: dict[str, Any], wall: float,
              training: float) -> dict[str, Any]:
    """``results.json``: each section's result under its key, plus what is needed to trust it."""
    claims = [claim for s in shown for claim in s.judge(found[s.key]["result"], ctx)]
    return {
        "preset": ctx.preset,
        **{s.key: found[s.key]["result"] for s in shown},
        "claims": records.to_jsonable(claims),
        "sections": {s.key: {"title": s.title, "settings": found[s.key].get("settings"),
                             "config_hash": found[s.key]["config_hash"]} for s in shown},
        "timings_seconds": {s.key: found[s.key].get("seconds") for s in shown},
        "wall_seconds_this_run": wall,
        # The zoo models the computed sections needed, trained first, and the units run ahead with them.
        "training_seconds_this_run": training,
        "environment": records.environment(),
    }
