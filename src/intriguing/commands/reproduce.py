"""``intriguing reproduce``: every section of the paper in one resumable run, with the report."""

from __future__ import annotations

import time

import click

from intriguing import paper, records, runner, zoo
from intriguing.errors import IntriguingError
from intriguing.runner.section import FINDING, SANITY
from intriguing.commands.options import ON_INTERRUPT, OutputPath, data_dir_option, device_option


@click.command("reproduce")
@click.option("--preset", type=click.Choice(runner.PRESETS), default="default", show_default=True,
              help="smoke: tiny, under a minute; default: >= 1,000 attacked examples per model, minutes; "
                   "full: the paper's scale, hours.")
@click.option("--out", type=OutputPath(path_type=str), default=None,
              help="Output folder (default: runs/<preset>); a rerun resumes what it finds there.")
@click.option("--only", "only", multiple=True, metavar="SECTION",
              help="Run only this section (and those it needs); repeat or separate with commas, "
                   "e.g. --only table1,table2.")
@data_dir_option
@click.option("--cache", type=OutputPath(path_type=str), default=None,
              help="Checkpoint cache folder (default: $INTRIGUING_CACHE or ~/.cache/intriguing).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress line.")
@click.option("--workers", type=click.IntRange(min=1), default=None, envvar="INTRIGUING_WORKERS",
              help="Units of work run at once (env INTRIGUING_WORKERS; default: all local cores when Ray is "
                   "installed, else 1). "
                   "More than 1 needs Ray: pip install 'intriguing[ray]'. The numbers do not depend on it.")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Join the Ray cluster at ADDR (printed by 'ray start --head'; 'auto' finds a local one).")
@device_option
@click.option("--gpus-per-unit", type=click.FloatRange(min=0, max=8), default=None, metavar="N",
              help="GPUs each unit of work asks Ray for with --device cuda (default 1; 0.25 lets four units "
                   "share a GPU).")
def command(preset: str, out: str | None, only: tuple[str, ...], data_dir: str | None, cache: str | None,
            progress: bool, workers: int | None, ray_address: str | None, device: str,
            gpus_per_unit: float | None) -> None:
    """Reproduce the paper's results: results.json, report.md, report.html and figures/ in the output folder."""
    start = time.perf_counter()
    folder = out if out is not None else paper.default_out(preset)
    # The cache is first written after the first model trains, possibly minutes in: check it now.
    records.check_writable(zoo.cache_dir(cache), "checkpoint cache")
    click.get_current_context().meta[ON_INTERRUPT] = (
        f"every file stored in {folder}/ is whole (sections are written atomically); "
        "rerun the same command to resume from the finished sections"
    )
    sections = [key.strip() for item in only for key in item.split(",") if key.strip()]
    if only and not sections:  # an empty --only would otherwise mean every section
        raise IntriguingError(f"--only: no section named in {', '.join(map(repr, only))}; give one or more, "
                              f"e.g. --only table1; known sections: {', '.join(paper.SECTION_MODULES)}")
    document = paper.reproduce(preset, out, only=sections or None, data_dir=data_dir, cache=cache, progress=progress,
                               workers=workers, ray_address=ray_address, device=device, gpus_per_unit=gpus_per_unit)
    click.echo(f"{len(document['sections'])} sections in {folder}/ (report.html, report.md, results.json); "
               f"{verdict_counts(document['claims'])} [{time.perf_counter() - start:.1f}s]")


def verdict_counts(claims: list[dict]) -> str:
    """The paper's findings by verdict, then the sanity checks: guarantees are not findings."""
    findings = [c for c in claims if c.get("kind", FINDING) == FINDING]
    held, failed = (sum(c["holds"] is v for c in findings) for v in (True, False))
    sane = [c for c in claims if c.get("kind") == SANITY]
    checks = f"; sanity checks {sum(c['holds'] is True for c in sane)} of {len(sane)} pass" if sane else ""
    return (f"of the paper's {len(findings)} findings {held} hold, {failed} do not, "
            f"{len(findings) - held - failed} undecided{checks}")
