"""What is specific to Szegedy et al. 2014: its reference numbers and one module per report section.

:data:`SECTIONS` is the explicit, ordered list of the reproduction's sections: the run's order and
the report's. A new section is one module in :mod:`intriguing.paper.sections` plus one line here.
:func:`reproduce` runs them (resuming what a previous run stored) and writes the report.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from intriguing import report, runner
from intriguing.devices import resolve_device
from intriguing.runner import Context, Section, backends

# Module names under intriguing.paper.sections, in run and report order (a section's needs come first).
SECTION_MODULES: tuple[str, ...] = (
    "units", "table1", "table2", "table3", "table4", "table5", "fig5", "adversarial_training", "deviations",
    "exactness", "lipschitz_gap",
)


def section_list() -> list[Section]:
    """The paper's sections, in order."""
    return [importlib.import_module(f"intriguing.paper.sections.{name}").SECTION for name in SECTION_MODULES]


def default_out(preset: str) -> Path:
    """Where a preset's run goes when no folder is given: ``runs/<preset>``."""
    return Path("runs") / preset


def reproduce(preset: str = "default", out: str | Path | None = None, *, only: list[str] | None = None,
              data_dir: str | None = None, cache: str | None = None, progress: bool = True,
              threads: int | None = None, workers: int | None = None,
              ray_address: str | None = None, device: str = "cpu",
              gpus_per_unit: float | None = None) -> dict[str, Any]:
    """Run (or resume) every section of the paper and write ``results.json`` and the report into ``out``.

    ``out`` defaults to ``runs/<preset>``. ``only`` restricts the run to some sections (and those
    they need); the report still shows every other section already stored in ``out``. ``threads``
    sets torch's intra-op threads for the run (``None``: torch's default) and for each unit of work
    (``None``: one). ``workers`` units run at once (default: all local cores when Ray is installed,
    else 1, in this process); ``ray_address`` joins a Ray cluster instead (``ray start --head``).
    The numbers are the same whatever ``workers`` and ``ray_address``. ``device`` (``"cpu"``,
    ``"cuda"``, ...) is where the attacks run; on Ray each unit then asks for ``gpus_per_unit`` GPUs
    (default: one on CUDA, none otherwise).
    """
    device = str(resolve_device(device))  # a missing GPU is one clear line, before any work starts
    if gpus_per_unit is None:
        gpus_per_unit = 1.0 if device.startswith("cuda") else 0.0
    backend = backends.create(workers, ray_address, threads=threads or 1, gpus_per_unit=gpus_per_unit)
    try:
        ctx = Context(preset=preset, out=Path(out) if out is not None else default_out(preset), data_dir=data_dir,
                      cache=cache, progress=progress, backend=backend, device=device)
        document, shown = runner.run(section_list(), ctx, only=only, threads=threads)
        report.write(document, shown, ctx)
    finally:
        backend.close()
    return document
