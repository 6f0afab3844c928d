"""What a section of a run is: its settings per preset, how it computes, renders and checks claims.

A *section* is one result of a study (for the paper: the zoo, Tables 1-5, units, adversarial
training). The runner knows nothing about the paper: it runs an ordered list of sections, stores
each result atomically and resumes. ``run`` computes a JSON-able dict, ``render`` turns it into a
Markdown fragment for the report, and the optional ``claims`` checks qualitative statements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intriguing import data
from intriguing.runner.backends import Backend
from intriguing.runner.backends.inprocess import InProcess
from intriguing.runner.kept import kept_map, map_missing

PRESETS = ("smoke", "default", "full")
DEFAULT_ESTIMATE_SECONDS = 60.0


def _no_display(text: str, fraction: float | None) -> None:
    return None


@dataclass(frozen=True)
class Context:
    """What every section may use: the preset, where to write, the data and the model cache.

    ``ctx.stage("attack FC10(1e-4)", 0.4)`` names what a long section is doing now and how far it
    is (a fraction of the section), so the progress line and its ETA stay honest. ``backend`` runs
    the sections' units of work (:mod:`intriguing.runner.work`): in this process, or on Ray workers;
    attacks run on ``device`` (a GPU, when the backend gives each unit one).
    """

    preset: str
    out: Path
    data_dir: str | None = None
    cache: str | None = None
    progress: bool = True
    on_stage: Callable[[str, float | None], None] = field(default=_no_display, compare=False, repr=False)
    backend: Backend = field(default_factory=InProcess, compare=False, repr=False)
    device: str = "cpu"
    # Results of units already run ahead of their section (:mod:`intriguing.runner.ahead`), by unit.
    ran_ahead: Mapping[tuple[Callable[[Any], Any], str], Any] = field(default_factory=dict, compare=False, repr=False)

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

    def map(self, function: Callable[[Any], Any], specs: Sequence[Any], what: str, share: float = 1.0,
            keep: Callable[[Any], Any] | None = None) -> list[Any]:
        """``function`` over ``specs`` on :attr:`backend` (units of work, results in ``specs``' order), with
        the stage line counting finished units: ``"<what>: 3/8"``; ``share`` of the section is this work.

        With ``keep``, each result is kept under ``OUT/units`` as it arrives and a rerun reads it back
        (:func:`~intriguing.runner.kept.kept_map`; ``keep`` rebuilds a result from its JSON form): for
        units long enough that losing them to a kill would cost real time. Units run ahead
        (:attr:`ran_ahead`) are not run again."""
        def show(done: int) -> None:
            self.stage(f"{what}: {done}/{len(specs)}", share * done / max(len(specs), 1))

        show(0)
        if keep is not None:
            return kept_map(self.backend, function, specs, self.kept_units, keep, device=self.device, on_done=show)
        units = [unit_id(function, spec) for spec in specs]
        results = [self.ran_ahead.get(unit) for unit in units]
        missing = [i for i, unit in enumerate(units) if unit not in self.ran_ahead]
        map_missing(self.backend, function, specs, missing, results.__setitem__, show)
        return results

    def map_units(self, units: Units, what: str, share: float = 1.0) -> list[Any]:
        """:meth:`map` of a section's :class:`Units` (those it may run ahead)."""
        return self.map(units.function, units.specs, what, share, units.keep)

    @property
    def kept_units(self) -> Path:
        """Folder of the kept units' results (:mod:`intriguing.runner.kept`)."""
        return self.out / "units"


def unit_id(function: Callable[[Any], Any], spec: Any) -> tuple[Callable[[Any], Any], str]:
    """What names a unit within a run: its function and its spec (whose ``repr`` holds every setting)."""
    return function, repr(spec)


@dataclass(frozen=True)
class Units:
    """Units of work of one function, as a section maps them (:meth:`Context.map_units`).

    A section's ``ahead`` lists those that need nothing but trained models, so that the runner can
    run them beside the training (:mod:`intriguing.runner.ahead`)."""

    function: Callable[[Any], Any]
    specs: tuple[Any, ...]
    keep: Callable[[Any], Any] | None = None


FINDING, SANITY = "finding", "sanity"
# Presets whose models are too small to test anything: their findings are listed, never judged.
UNJUDGED_PRESETS = {"smoke": "smoke: models barely trained, numbers show the pipeline works, no claim is judged"}


@dataclass(frozen=True)
class Claim:
    """A qualitative statement and whether our numbers support it, decided by intervals or tests.

    ``holds`` is ``True``/``False`` only when a confidence interval or test separates the
    alternatives, ``None`` ("undecided") otherwise; then ``needed_n`` (if known) is roughly the
    sample size that would decide it, should the observed gap stay the same. ``kind`` is
    :data:`FINDING` for the paper's findings, or :data:`SANITY` for mathematical guarantees checked
    on our numbers (e.g. an upper bound above the exact value), which are not counted as findings.
    """

    section: str
    statement: str
    holds: bool | None
    evidence: str
    kind: str = FINDING
    needed_n: int | None = None
    paper_number: bool = False


def dataset_name(data_dir: str | None) -> str:
    """The run's dataset in words: "MNIST" (the bundled copy, or any folder with the same content),
    else a known name for the folder (e.g. "Fashion-MNIST"), else the folder's name."""
    if data.fingerprint(data_dir) == data.fingerprint(data.bundled_dir()):
        return "MNIST"
    folder = data.resolve_data_dir(data_dir).name
    return KNOWN_DATASETS.get(folder.lower().replace("_", "-"), folder)


KNOWN_DATASETS = {"fashion-mnist": "Fashion-MNIST", "kmnist": "Kuzushiji-MNIST", "emnist": "EMNIST", "mnist": "MNIST"}


def judged(claims: list[Claim], preset: str, dataset: str = "MNIST") -> list[Claim]:
    """``claims`` as the run may judge them.

    In :data:`UNJUDGED_PRESETS` every finding is undecided. On a dataset other than the paper's
    MNIST, a finding that compares with one of the paper's MNIST numbers (``paper_number``) is
    undecided too; the others are judged on the dataset's own numbers. Sanity checks stay decided:
    a guarantee must hold whatever the training and the data.
    """
    def judge(c: Claim) -> Claim:
        if c.kind == SANITY:
            return c
        if preset in UNJUDGED_PRESETS:
            return dataclasses.replace(c, holds=None, needed_n=None, evidence=f"not judged ({preset} preset); "
                                       f"{c.evidence}")
        if c.paper_number and dataset != "MNIST":
            return dataclasses.replace(c, holds=None, needed_n=None, evidence=f"not judged: compares with the "
                                       f"paper's MNIST number, this run is on {dataset}; {c.evidence}")
        return c

    return [judge(c) for c in claims]


@dataclass(frozen=True)
class Section:
    """One result of a study: computed by ``run``, shown by ``render``.

    ``settings`` is the section's per-preset configuration (build it with :func:`preset_settings`);
    ``run(ctx, settings[ctx.preset], results)`` gets the chosen entry and the results of the
    sections run before it, and returns a JSON-able dict. The chosen entry and the library's code
    version are hashed, so a changed configuration or code recomputes the section instead of
    reusing it. ``needs`` names sections whose results ``run`` reads (they are run first);
    ``estimate_seconds`` per preset drives the ETA; ``claims(result)`` (optional) returns the
    :class:`Claim` s the report's summary lists. ``models(ctx, settings)`` (optional) lists the zoo
    models ``run`` trains or loads (:class:`~intriguing.runner.work.TrainModel` specs): the runner
    trains those of every section to compute together first, so all workers share that work.
    ``ahead(ctx, settings)`` (optional) lists the :class:`Units` that ``run`` maps and that need
    nothing but those models: the runner runs them beside the training, each once its models are
    trained, so that workers left idle by the last models take them.
    """

    key: str
    title: str
    run: Callable[[Context, Any, dict[str, Any]], dict[str, Any]]
    render: Callable[[dict[str, Any], Context], str]
    settings: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    estimate_seconds: dict[str, float] = field(default_factory=dict)
    claims: Callable[[dict[str, Any]], list[Claim]] | None = None
    models: Callable[[Context, Any], Sequence[Any]] | None = None
    ahead: Callable[[Context, Any], Sequence[Units]] | None = None

    def chosen(self, preset: str) -> Any:
        """This section's settings for ``preset`` (``None`` when it has none)."""
        return self.settings.get(preset) if self.settings else None

    def estimate(self, preset: str) -> float:
        return self.estimate_seconds.get(preset, DEFAULT_ESTIMATE_SECONDS)

    def judge(self, result: dict[str, Any], ctx: Context) -> list[Claim]:
        """This section's claims on ``result`` as the run ``ctx`` may judge them (:func:`judged`)."""
        return judged(self.claims(result), ctx.preset, dataset_name(ctx.data_dir)) if self.claims else []


def preset_settings(**by_preset: Any) -> dict[str, Any]:
    """Build a section's ``settings`` dict, checking that every preset has an entry."""
    missing = [p for p in PRESETS if p not in by_preset]
    if missing:
        raise ValueError(f"section settings lack presets {missing}")
    return {p: by_preset[p] for p in PRESETS}
