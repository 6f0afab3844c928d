"""``intriguing reproduce``: every section of the paper in one resumable run.

A *section* (one per paper result: the zoo, Tables 1-5, units, adversarial training) is a
:class:`Section` registered here: ``run`` computes a JSON-able dict, ``render`` turns it into a
Markdown fragment for the report, and the optional ``claims`` checks the paper's qualitative
statements against it. Each finished section is saved atomically to ``OUT/sections/<key>.json``
together with a hash of its configuration, so a run killed at any moment and started again skips
what is done and produces identical numbers (every section is seeded; trained models come from the
checkpoint cache; long sections keep their own intermediate files in ``ctx.artifacts``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from intriguing import __version__, records
from intriguing.errors import IntriguingError, unknown_name_error

PRESETS = ("smoke", "default", "full")

# Each module registers its section(s) on import; the order here is the run's and the report's order.
SECTION_MODULES: tuple[str, ...] = (
    "intriguing.units", "intriguing.transfer", "intriguing.spectral", "intriguing.advtrain",
)

DEFAULT_ESTIMATE_SECONDS = 60.0


def _no_display(text: str, fraction: float | None) -> None:
    return None


@dataclass(frozen=True)
class Context:
    """What every section may use: the preset, where to write, the data and the model cache.

    ``ctx.stage("attack FC10(1e-4)", 0.4)`` names what a long section is doing now and how far it
    is (a fraction of the section), so the progress line and its ETA stay honest.
    """

    preset: str
    out: Path
    data_dir: str | None = None
    cache: str | None = None
    progress: bool = True
    on_stage: Callable[[str, float | None], None] = field(default=_no_display, compare=False, repr=False)

    @property
    def figures(self) -> Path:
        """Folder for the report's PNG figures (sections link them as ``figures/NAME.png``)."""
        return self._folder("figures")

    @property
    def artifacts(self) -> Path:
        """Folder for a section's intermediate files (e.g. adversarial images), kept for resuming."""
        return self._folder("artifacts")

    def _folder(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stage(self, text: str, fraction: float | None = None) -> None:
        """Report the current step of the running section (``fraction`` of it done, if known)."""
        self.on_stage(text, fraction)


@dataclass(frozen=True)
class Claim:
    """One of the paper's qualitative statements and whether our numbers support it.

    ``holds`` is ``True``/``False``, or ``None`` when the numbers cannot decide (e.g. too few
    examples for the confidence intervals to separate).
    """

    section: str
    statement: str
    holds: bool | None
    evidence: str


@dataclass(frozen=True)
class Section:
    """One result of the paper: computed by ``run``, shown by ``render``.

    ``settings`` is the section's per-preset configuration (build it with :func:`preset_settings`);
    ``run(ctx, settings[ctx.preset], results)`` gets the chosen entry and the results of the
    sections run before it, and returns a JSON-able dict. The chosen entry is hashed, so a changed
    configuration recomputes the section instead of reusing it. ``needs`` names sections whose
    results ``run`` reads (they are run first); ``estimate_seconds`` per preset drives the ETA;
    ``claims(result)`` (optional) returns the :class:`Claim` s the report's summary lists.
    """

    key: str
    title: str
    run: Callable[[Context, Any, dict[str, Any]], dict[str, Any]]
    render: Callable[[dict[str, Any], Context], str]
    settings: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    estimate_seconds: dict[str, float] = field(default_factory=dict)
    claims: Callable[[dict[str, Any]], list[Claim]] | None = None


_SECTIONS: dict[str, Section] = {}


def register(section: Section) -> Section:
    _SECTIONS[section.key] = section
    return section


def sections() -> list[Section]:
    """Registered sections in run and report order: by module as listed in ``SECTION_MODULES``
    (whatever order they were imported in), then in registration order. A section's ``needs``
    must come before it.
    """
    for module in SECTION_MODULES:
        importlib.import_module(module)
    rank = {module: i for i, module in enumerate(SECTION_MODULES)}
    return sorted(_SECTIONS.values(), key=lambda s: rank.get(getattr(s.run, "__module__", None), len(rank)))


def preset_settings(**by_preset: Any) -> dict[str, Any]:
    """Build a section's ``settings`` dict, checking that every preset has an entry."""
    missing = [p for p in PRESETS if p not in by_preset]
    if missing:
        raise ValueError(f"section settings lack presets {missing}")
    return {p: by_preset[p] for p in PRESETS}


@functools.lru_cache(maxsize=1)
def _paper_tables() -> dict[str, Any]:
    text = resources.files("intriguing").joinpath("resources/szegedy2013_tables.json").read_text("utf-8")
    return json.loads(text)


def paper(key: str) -> dict[str, Any]:
    """The paper's published numbers for ``key`` (``"table1"`` ... ``"table5"``), shipped in the package."""
    tables = _paper_tables()
    if key not in tables or not isinstance(tables[key], dict):
        raise unknown_name_error("paper table", key, [k for k, v in tables.items() if isinstance(v, dict)])
    return tables[key]


def config_hash(section: Section, ctx: Context) -> str:
    """Names what a stored section result depends on: its settings, the data and the library version
    (a new release may compute differently, so its results are not mixed with an older run's)."""
    chosen = section.settings.get(ctx.preset) if section.settings else None
    blob = json.dumps(
        {"key": section.key, "preset": ctx.preset, "settings": records.to_jsonable(chosen),
         "data_dir": ctx.data_dir, "version": __version__}, sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def section_path(ctx: Context, key: str) -> Path:
    return ctx.out / "sections" / f"{key}.json"


def _stored(ctx: Context, section: Section) -> dict[str, Any] | None:
    """The section's saved record if it was computed with the current configuration, else None."""
    path = section_path(ctx, section.key)
    if not path.is_file():
        return None
    stored = records.read_json(path)
    return stored if stored.get("config_hash") == config_hash(section, ctx) else None


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


class _Display:
    """The single progress line: which section (k/n) and stage runs, overall percent and ETA.

    The bar counts *estimated* seconds of the sections still to compute (stored ones cost
    nothing), so tqdm's remaining time is the estimate rescaled by how fast this machine has
    been so far.
    """

    def __init__(self, estimates: list[float], enabled: bool):
        self.count = len(estimates)
        self.bar = tqdm(total=max(sum(estimates), 1e-9), disable=not enabled, unit="s",
                        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        self.index, self.base, self.estimate = 0, 0.0, 0.0

    def begin(self, section: Section, estimate: float) -> None:
        self.index += 1
        self.base, self.estimate = self.bar.n, estimate
        self.stage(section.title, 0.0)

    def stage(self, text: str, fraction: float | None) -> None:
        self.bar.set_description_str(f"reproduce [{self.index}/{self.count}] {text}", refresh=False)
        if fraction is not None:
            self.bar.update(self.base + min(max(fraction, 0.0), 1.0) * self.estimate - self.bar.n)
        self.bar.refresh()

    def end(self) -> None:
        self.bar.update(self.base + self.estimate - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def default_out(preset: str) -> Path:
    """Where a preset's run goes when no folder is given: ``runs/<preset>``."""
    return Path("runs") / preset


def run(preset: str = "default", out: str | Path | None = None, *, only: list[str] | None = None,
        data_dir: str | None = None, cache: str | None = None, progress: bool = True,
        threads: int | None = None) -> dict[str, Any]:
    """Run (or resume) the registered sections and write ``results.json`` and the report into ``out``.

    ``out`` defaults to ``runs/<preset>``. ``only`` restricts the run to some sections (and the
    sections they need); the report still includes every other section already stored in ``out``
    with the current configuration. ``threads`` sets torch's intra-op threads for the run (``None``:
    torch's default); on a machine shared by several jobs, 1 avoids threads waiting for each other.
    """
    if preset not in PRESETS:
        raise IntriguingError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    ctx = Context(preset=preset, out=Path(out) if out is not None else default_out(preset), data_dir=data_dir,
                  cache=cache, progress=progress)
    registered = sections()
    chosen = _with_needs(registered, only) if only else registered
    stored = {s.key: _stored(ctx, s) for s in registered}
    with _torch_threads(threads):
        start = time.perf_counter()
        _compute_missing(ctx, chosen, stored)
        shown = [s for s in registered if stored[s.key] is not None]
        document = _document(ctx, shown, stored, time.perf_counter() - start)
    records.write_json(ctx.out / "results.json", document)
    from intriguing import report

    report.write(document, shown, ctx)
    return document


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """``torch.set_num_threads(count)`` inside the block, the previous setting restored after."""
    if count is None:
        yield
        return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise IntriguingError(f"threads: expected a whole number >= 1, got {count!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _compute_missing(ctx: Context, chosen: list[Section], stored: dict[str, Any]) -> None:
    """Compute the chosen sections not in ``stored`` (in order, under one progress line) and add them."""
    estimates = {s.key: s.estimate_seconds.get(ctx.preset, DEFAULT_ESTIMATE_SECONDS)
                 for s in chosen if stored[s.key] is None}
    display = _Display(list(estimates.values()), ctx.progress)
    ctx = dataclasses.replace(ctx, on_stage=display.stage)
    results: dict[str, Any] = {}
    try:
        for section in chosen:
            if stored[section.key] is None:
                display.begin(section, estimates[section.key])
                stored[section.key] = _compute(section, ctx, results)
                display.end()
            results[section.key] = stored[section.key]["result"]
    finally:
        display.close()


def _compute(section: Section, ctx: Context, results: dict[str, Any]) -> dict[str, Any]:
    """Run one section and store its record atomically (so a kill never leaves half a file)."""
    begin = time.perf_counter()
    result = records.to_jsonable(section.run(ctx, section.settings.get(ctx.preset), results))
    record = {"config_hash": config_hash(section, ctx), "seconds": time.perf_counter() - begin,
              "settings": records.to_jsonable(section.settings.get(ctx.preset)), "result": result}
    records.write_json(section_path(ctx, section.key), record)
    return record


def _document(ctx: Context, shown: list[Section], stored: dict[str, Any], wall: float) -> dict[str, Any]:
    """``results.json``: each section's result under its key, plus what is needed to trust it."""
    claims = [claim for s in shown if s.claims for claim in s.claims(stored[s.key]["result"])]
    claims = records.to_jsonable(claims)
    return {
        "preset": ctx.preset,
        **{s.key: stored[s.key]["result"] for s in shown},
        "claims": claims,
        "sections": {s.key: {"title": s.title, "settings": stored[s.key].get("settings"),
                             "config_hash": stored[s.key]["config_hash"]} for s in shown},
        "timings_seconds": {s.key: stored[s.key].get("seconds") for s in shown},
        "wall_seconds_this_run": wall,
        "environment": records.environment(),
    }
