"""``intriguing reproduce``: every section of the paper in one resumable run.

A *section* (one per paper result: the zoo, Tables 1-5, units, adversarial training) is a
:class:`Section` registered here: ``run`` computes a JSON-able dict, ``render`` turns it into a
Markdown fragment for the report. Each finished section is saved atomically to
``OUT/sections/<key>.json`` together with a hash of its configuration, so a run killed at any
moment and started again skips what is done and produces identical numbers (every section is
seeded; trained models come from the checkpoint cache).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from intriguing import records
from intriguing.errors import IntriguingError, unknown_name_error

PRESETS = ("smoke", "default", "full")


@dataclass(frozen=True)
class Context:
    """What every section may use: the preset, where to write, the data and the model cache."""

    preset: str
    out: Path
    data_dir: str | None = None
    cache: str | None = None
    progress: bool = True

    @property
    def figures(self) -> Path:
        """Folder for the report's PNG figures (sections link them as ``figures/NAME.png``)."""
        path = self.out / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Section:
    """One result of the paper: computed by ``run``, shown by ``render``.

    ``settings`` is the section's per-preset configuration (build it with :func:`preset_settings`);
    ``run(ctx, settings[ctx.preset], results)`` gets the chosen entry and the results of the
    sections run before it, and returns a JSON-able dict. The chosen entry is hashed, so a changed
    configuration recomputes the section instead of reusing it. ``needs`` names sections whose
    results ``run`` reads (they are run first); ``estimate_seconds`` per preset drives the ETA.
    """

    key: str
    title: str
    run: Callable[[Context, Any, dict[str, Any]], dict[str, Any]]
    render: Callable[[dict[str, Any], Context], str]
    settings: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    estimate_seconds: dict[str, float] = field(default_factory=dict)


_SECTIONS: dict[str, Section] = {}


def register(section: Section) -> Section:
    _SECTIONS[section.key] = section
    return section


def sections() -> list[Section]:
    """Registered sections in run order (a section's ``needs`` always come before it)."""
    _import_sections()
    return list(_SECTIONS.values())


def _import_sections() -> None:
    # Each module registers its section(s) on import; the order here is the report's order.
    import importlib

    for module in SECTION_MODULES:
        importlib.import_module(module)


SECTION_MODULES: tuple[str, ...] = ("intriguing.transfer",)


def config_hash(section: Section, ctx: Context) -> str:
    chosen = section.settings.get(ctx.preset) if section.settings else None
    blob = json.dumps(
        {"key": section.key, "preset": ctx.preset, "settings": records.to_jsonable(chosen),
         "data_dir": ctx.data_dir}, sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stored(path: Path, digest: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    stored = records.read_json(path)
    return stored["result"] if stored.get("config_hash") == digest else None


def run(preset: str = "default", out: str | Path = "runs/default", *, only: list[str] | None = None,
        data_dir: str | None = None, cache: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every registered section and write ``results.json`` and the report into ``out``."""
    if preset not in PRESETS:
        raise IntriguingError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    ctx = Context(preset=preset, out=Path(out), data_dir=data_dir, cache=cache, progress=progress)
    chosen = sections()
    if only:
        known = {s.key for s in chosen}
        for key in only:
            if key not in known:
                raise unknown_name_error("section", key, known)
        wanted = set(only)
        for s in reversed(chosen):
            if s.key in wanted:
                wanted.update(s.needs)
        chosen = [s for s in chosen if s.key in wanted]
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    estimates = [s.estimate_seconds.get(preset, 60.0) for s in chosen]
    with tqdm(total=sum(estimates), disable=not progress, unit="s", desc="reproduce",
              bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]") as bar:
        for section, estimate in zip(chosen, estimates):
            path = ctx.out / "sections" / f"{section.key}.json"
            digest = config_hash(section, ctx)
            stored = _stored(path, digest)
            bar.set_description(f"reproduce [{section.key}: {'cached' if stored else section.title}]")
            if stored is None:
                start = time.perf_counter()
                stored = section.run(ctx, section.settings.get(preset), results)
                timings[section.key] = time.perf_counter() - start
                records.write_json(path, {"config_hash": digest, "seconds": timings[section.key],
                                          "result": stored})
            else:
                timings[section.key] = records.read_json(path).get("seconds", 0.0)
            results[section.key] = stored
            bar.update(estimate)
    from intriguing import report

    document = {
        "preset": preset,
        **results,
        "timings_seconds": timings,
        "environment": records.environment(),
    }
    records.write_json(ctx.out / "results.json", document)
    report.write(document, [s for s in chosen], ctx)
    return document


def preset_settings(**by_preset: Any) -> dict[str, Any]:
    """Build a section's ``settings`` dict, checking that every preset has an entry."""
    missing = [p for p in PRESETS if p not in by_preset]
    if missing:
        raise ValueError(f"section settings lack presets {missing}")
    return {p: by_preset[p] for p in PRESETS}


